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
from typing import Callable, List, Optional, Sequence

import gevent
import zmq
from gevent.event import Event
from gevent.hub import get_hub

from ..sockets import BURST as _BURST, EVENTS as _EVENTS, HWM, NOBLOCK as _NOBLOCK
from ..sockets import POLLIN as _POLLIN, POLLOUT as _POLLOUT, PeerUnreachable, SocketCore

__all__ = ["Transport", "PeerUnreachable", "HWM"]

log = logging.getLogger("zrpc.transport")

# Receive errors after which a socket can never read again.
_FATAL = frozenset((zmq.ETERM, zmq.ENOTSOCK, zmq.EFAULT))


class Transport(SocketCore):
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
        super().__init__(socket_type, context if context is not None else zmq.Context.instance(),
                         max_message_size, setup, track_connections)
        self._on_frames = on_frames
        self._readable = Event()
        self._writable = Event()
        self._writable.set()
        #: Set on every change of the connections' state (the waiter clears it before looking).
        self.changed = Event()
        self._reader: Optional[gevent.Greenlet] = None
        self._monitor_reader: Optional[gevent.Greenlet] = None
        self._watcher = get_hub().loop.io(self._sock.getsockopt(zmq.FD), 1)
        self._watcher.start(self._poll)

    # -- life cycle --------------------------------------------------------
    def start(self) -> None:
        """Start the reader greenlet (idempotent)."""
        if self._reader is None and not self._closed:
            self._reader = gevent.spawn(self._read_loop)
            if self._monitor is not None:
                self._monitor_reader = gevent.spawn(self._monitor_loop)

    def _monitor_loop(self) -> None:
        """Hand the socket monitor's events to SocketCore.read_monitor as they come."""
        monitor = self._monitor
        assert monitor is not None
        readable = Event()
        watcher = get_hub().loop.io(monitor.getsockopt(zmq.FD), 1)
        watcher.start(readable.set)
        try:
            while self.read_monitor():
                readable.clear()
                try:
                    if monitor.getsockopt(_EVENTS) & _POLLIN:
                        continue
                except zmq.ZMQError:
                    return
                readable.wait()
        finally:
            watcher.stop()
            watcher.close()

    def connections_changed(self) -> None:
        self.changed.set()  # a sender waiting for a live connection looks again

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
        current = gevent.getcurrent()
        for reader in (self._reader, self._monitor_reader):
            if reader is not None and reader is not current:
                reader.kill(block=False)
        self._reader = self._monitor_reader = None
        self._readable.set()
        self._writable.set()
        self.changed.set()
        self.close_socket(linger)

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

    def after_send(self) -> None:
        if not self._readable.is_set():
            self._poll()  # the send may have consumed the FD edge the reader waits for

    def _read_loop(self) -> None:
        events = self._sock.getsockopt
        readable = self._readable
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
                self._receive_one()
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
            burst += 1
            if burst >= _BURST:
                burst = 0
                gevent.sleep(0)

    def _receive_one(self) -> None:
        """Receive one whole message and hand it to ``on_frames`` (raises zmq.Again if there is none)."""
        recv = self._sock.recv
        frame = recv(_NOBLOCK, copy=False)
        # Envelope frames as bytes (hashable); the payload as a buffer, copied once by msgpack.
        frames: List = []
        while frame.more:  # the rest of a multipart message is already here: never EAGAIN
            frames.append(frame.bytes)
            frame = recv(_NOBLOCK, copy=False)
        frames.append(frame.buffer)
        self.frame = frame  # the payload Frame, for its metadata (Peer-Address, User-Id)
        try:
            self._on_frames(frames)
        except Exception:
            log.exception("error while handling an incoming message (ignored)")
        self.frame = None

    def drain(self) -> None:
        """Hand on every message already received, now (before treating the connection as gone)."""
        try:
            while not self._closed and self._sock.getsockopt(_EVENTS) & _POLLIN:
                self._receive_one()
        except zmq.ZMQError:
            pass

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
        if self.try_send(frames):
            return
        for seconds, sleep in self.send_waits(frames, deadline, timeout):
            if sleep:
                gevent.sleep(seconds)
            else:
                writable = self.arm_writable()
                if not writable.is_set():
                    writable.wait(seconds)
