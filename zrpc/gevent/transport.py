"""One ZeroMQ socket driven by gevent: a reader greenlet and non-blocking sends.

This module owns the zmq context, sockets, endpoints and socket options. It
knows frames, never events: decoding and routing belong to the caller's
``on_frames`` callback.

Why not ``zmq.green``: it allows one waiting sender per socket and hands every
message through its own wait logic. Here all receiving happens in one reader
greenlet that drains the socket in a burst, and senders try a non-blocking
send first, so a call costs no switch that the work itself does not need.
The ZMQ_FD edge-trigger rule is respected: after every send (which may eat
the FD's notification) the reader is re-armed by asking ``EVENTS`` again.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional, Sequence

import gevent
import zmq
from gevent.event import Event
from gevent.hub import get_hub
from zmq.utils.monitor import parse_monitor_message

from ..core.errors import ClosedError, TimeoutExpired
from ..core.events import IncompleteHandshakes

__all__ = ["Transport", "PeerUnreachable"]

log = logging.getLogger("zrpc.transport")

# Plain ints: pyzmq's enum flags cost more than the send itself on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = int(zmq.EVENTS)
# Frames at least this large are sent without a copy (pyzmq copies smaller ones anyway).
_ZERO_COPY = 1 << 16
# The reader yields to other greenlets after this many messages in a burst.
_BURST = 256
_HANDSHAKE_OK = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_TRACKED_EVENTS = (_HANDSHAKE_OK | int(zmq.EVENT_DISCONNECTED) | int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                   | int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) | int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
# Handshakes that ended with an event of their own (NO_DETAIL is also what a PUSH peer closing first gives).
_HANDSHAKE_DONE = (_HANDSHAKE_OK, int(zmq.EVENT_HANDSHAKE_FAILED_AUTH), int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))
_OPENED = (int(zmq.EVENT_ACCEPTED), int(zmq.EVENT_CONNECTED))
# Receive errors after which a socket can never read again.
_FATAL = frozenset((zmq.ETERM, zmq.ENOTSOCK, zmq.EFAULT))


class PeerUnreachable(Exception):
    """A ROUTER reply could not be routed: that peer has disconnected."""


class Transport:
    """A zmq ``socket_type`` socket whose incoming messages go to ``on_frames(frames)``.

    ``on_frames`` runs in the reader greenlet and must not block. ``close()``
    never blocks: zmq delivers what is queued in the background for at most
    its ``linger``, so no closed socket keeps the process alive.
    """

    def __init__(
        self,
        socket_type: int,
        on_frames: Callable[[List[bytes]], None],
        context: Optional[zmq.Context] = None,
        max_message_size: Optional[int] = None,
        setup: Optional[Callable[[zmq.Socket], None]] = None,
        track_connections: bool = False,
    ) -> None:
        self._context = context if context is not None else zmq.Context.instance()
        sock = self._context.socket(socket_type)
        sock.linger = 0
        if socket_type == zmq.ROUTER:
            # Learn that a peer is gone (EHOSTUNREACH) instead of dropping replies silently.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if max_message_size:
            # Hard backstop well above the soft limit, which is answered with an ERR.
            sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_size)
        if setup is not None:
            # The owner's options (CURVE keys, buffers...) must be set before any bind or connect.
            setup(sock)
        self._sock = sock
        self._is_router = socket_type == zmq.ROUTER
        self._on_frames = on_frames
        self._readable = Event()
        self._writable = Event()
        self._writable.set()
        self._closed = False
        self._reader: Optional[gevent.Greenlet] = None
        self._watcher = get_hub().loop.io(sock.getsockopt(zmq.FD), 1)
        self._watcher.start(self._poll)
        self.endpoints: List[str] = []
        #: While ``on_frames`` runs: the zmq Frame of the message's last part (connection metadata).
        self.frame: Optional[zmq.Frame] = None
        #: ``on_event(event, value, endpoint)`` sees every socket monitor event (handshake failures...).
        self.on_event: Optional[Callable[[int, int, str], None]] = None
        #: Connections whose handshake completed and that have not dropped since.
        self.connections = 0
        #: Set on every change of the connections' state (the waiter clears it before looking).
        self.changed = Event()
        self._monitor: Optional[zmq.Socket] = None
        self._monitor_reader: Optional[gevent.Greenlet] = None
        if track_connections:
            # ZMQ_IMMEDIATE would give "send only on live connections" for
            # free, but it discards replies already received from a peer
            # that then disconnects (a server's last reply before it exits).
            # A socket monitor tells which connections are up instead.
            self._monitor = sock.get_monitor_socket(_TRACKED_EVENTS)
        self._handshakes: Optional[IncompleteHandshakes] = None
        if socket_type == zmq.ROUTER and self._monitor is None:
            # Log why a zerorpc Pusher/Publisher aimed at a server loses its events (libzmq says nothing).
            self._handshakes = IncompleteHandshakes(_OPENED, int(zmq.EVENT_DISCONNECTED), _HANDSHAKE_DONE)
            self._monitor = sock.get_monitor_socket(_TRACKED_EVENTS | _OPENED[0] | _OPENED[1])

    # -- endpoints -------------------------------------------------------
    def bind(self, endpoint: str) -> str:
        """Bind; return the endpoint actually bound (``tcp://127.0.0.1:*`` picks a free port)."""
        self._check_open()
        self._sock.bind(endpoint)
        bound = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.endpoints.append(bound)
        log.debug("bound %s", bound)
        return bound

    def connect(self, endpoint: str) -> str:
        """Connect (zmq reconnects by itself if the peer comes and goes)."""
        self._check_open()
        self._sock.connect(endpoint)
        self.endpoints.append(endpoint)
        log.debug("connecting to %s", endpoint)
        return endpoint

    # -- life cycle --------------------------------------------------------
    def start(self) -> None:
        """Start the reader greenlet (idempotent)."""
        if self._reader is None and not self._closed:
            self._reader = gevent.spawn(self._read_loop)
            if self._monitor is not None:
                self._monitor_reader = gevent.spawn(self._monitor_loop)

    def _monitor_loop(self) -> None:
        """Count connections up from the socket monitor's events."""
        monitor = self._monitor
        assert monitor is not None
        readable = Event()
        watcher = get_hub().loop.io(monitor.getsockopt(zmq.FD), 1)
        watcher.start(readable.set)
        try:
            while not self._closed:
                try:
                    frames = monitor.recv_multipart(_NOBLOCK)
                except zmq.Again:
                    readable.clear()
                    if not monitor.getsockopt(_EVENTS) & _POLLIN:
                        readable.wait()
                    continue
                except zmq.ZMQError:
                    return
                message = parse_monitor_message(frames)
                event = message["event"]
                endpoint = message["endpoint"].decode("utf-8", "replace")
                if self.on_event is not None:
                    self.on_event(event, message["value"], endpoint)
                if self._handshakes is not None:
                    warning = self._handshakes.observe(event, message["value"], endpoint, time.monotonic())
                    if warning is not None:
                        log.warning("%s", warning)
                if event == _HANDSHAKE_OK:
                    self.connections += 1
                elif event == zmq.EVENT_DISCONNECTED and self.connections:
                    self.connections -= 1
                self.changed.set()  # a sender waiting for a live connection looks again
        finally:
            watcher.stop()
            watcher.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def socket(self) -> zmq.Socket:
        """The zmq socket (for its identity; do not send or receive on it)."""
        return self._sock

    def wake_senders(self) -> None:
        """Wake greenlets waiting to send, so they re-check why they cannot (e.g. a failed handshake)."""
        self._writable.set()
        self.changed.set()

    def close(self, linger: float = 0.0) -> None:
        """Release the socket now; blocked senders raise ClosedError.

        ``linger`` (seconds) lets zmq's I/O thread deliver messages already
        queued, in the background; it never blocks this call.
        """
        if self._closed:
            return
        self._closed = True
        self._watcher.stop()
        self._watcher.close()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        self._readable.set()
        self._writable.set()
        if self._monitor is not None:
            monitor_reader, self._monitor_reader = self._monitor_reader, None
            if monitor_reader is not None and monitor_reader is not gevent.getcurrent():
                monitor_reader.kill(block=False)
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:  # a terminated context: the monitor goes with the socket
                pass
            self._monitor.close(linger=0)
        self.changed.set()
        self._sock.close(linger=int(linger * 1000))

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("socket is closed")

    # -- I/O ---------------------------------------------------------------
    def _poll(self) -> None:
        """Translate ZMQ_EVENTS into our gevent events (runs in the hub or after a send)."""
        if self._closed:
            return
        try:
            events = self._sock.getsockopt(_EVENTS)
        except zmq.ZMQError:
            return
        if events & _POLLIN:
            self._readable.set()
        if events & _POLLOUT:
            self._writable.set()

    def _read_loop(self) -> None:
        sock = self._sock
        recv = sock.recv
        events = sock.getsockopt
        readable = self._readable
        on_frames = self._on_frames
        burst = failures = 0
        while not self._closed:
            try:
                # Asking EVENTS is cheaper than the Again exception a failed recv raises.
                if not events(_EVENTS) & _POLLIN:
                    burst = 0
                    readable.clear()
                    self._poll()
                    readable.wait()
                    continue
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                if exc.errno in _FATAL:
                    log.error("receive failed for good, the socket stops reading: %s", exc)
                    return
                # Unexpected and maybe passing: say it once per run of failures, back off.
                if failures == 0:
                    log.error("receive failed (retrying): %s", exc)
                failures += 1
                gevent.sleep(min(0.01 * 2 ** min(failures, 7), 1.0))
                continue
            failures = 0
            # Envelope frames as bytes (hashable); the payload as a buffer, copied once by msgpack.
            frames: List = []
            while frame.more:  # the rest of a multipart message is already here: never EAGAIN
                frames.append(frame.bytes)
                frame = recv(_NOBLOCK, copy=False)
            frames.append(frame.buffer)
            self.frame = frame  # the payload Frame, for its metadata (Peer-Address, User-Id)
            try:
                on_frames(frames)
            except Exception:
                log.exception("error while handling an incoming message (ignored)")
            self.frame = None
            burst += 1
            if burst >= _BURST:
                burst = 0
                gevent.sleep(0)

    def try_send(self, frames: Sequence[bytes]) -> bool:
        """Send now if the socket can take it; return False if it would block.

        Raises PeerUnreachable if a ROUTER peer is gone, ClosedError if closed.
        """
        if self._closed:
            raise ClosedError("socket is closed")
        send = self._sock.send
        try:
            # Only the first frame can block: zmq queues a multipart message whole or not at all.
            for frame in frames[:-1]:
                send(frame, _SNDMORE_NOBLOCK)
            last = frames[-1]
            send(last, _NOBLOCK, copy=len(last) < _ZERO_COPY)
        except zmq.Again:
            self._poll()  # a failed send may have consumed the FD edge the reader waits for
            return False
        except zmq.ZMQError as exc:
            self._poll()
            if exc.errno == zmq.EHOSTUNREACH:
                raise PeerUnreachable(str(exc)) from None
            if self._closed:
                raise ClosedError("socket is closed") from None
            raise
        if not self._readable.is_set():
            self._poll()  # the send may have consumed the FD edge the reader waits for
        return True

    def arm_writable(self) -> Event:
        """An event set once the socket may take a message (already set if it can now)."""
        self._writable.clear()
        self._poll()
        return self._writable

    def send(self, frames: Sequence[bytes], deadline: Optional[float] = None,
             timeout: Optional[float] = None) -> None:
        """Send, waiting while the socket is full, until ``deadline`` (time.monotonic()).

        Raises TimeoutExpired(timeout) if the deadline passes before the
        message was queued: then nothing at all was sent.
        """
        backoff = 0.001
        while not self.try_send(frames):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(timeout, "while sending (no peer is taking messages)")
            if self._is_router:
                # ROUTER's POLLOUT means "some pipe has room", not ours: back off.
                gevent.sleep(backoff if remaining is None else min(backoff, remaining))
                backoff = min(backoff * 2, 0.05)
                continue
            writable = self.arm_writable()
            if not writable.is_set():
                writable.wait(remaining)
