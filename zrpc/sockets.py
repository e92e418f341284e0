"""One zmq socket as every driver uses it, without an event loop: options, endpoints, sends, monitor.

A driver's transport (``zrpc.gevent.transport``, ``zrpc.aio.transport``)
subclasses :class:`SocketCore` and adds only the waiting: how its reader
wakes when the socket's FD signals, and how a sender waits for room. What a
socket is set up with, how a multipart message is sent without blocking,
how the socket monitor's events are counted into live connections and how
a socket is released are decided here, once.

The ZMQ_FD edge-trigger rule is the drivers' to keep: a send (failed or
not) may consume the edge that announces input, so after every send
:meth:`SocketCore.after_send` is called, and a driver re-checks
``ZMQ_EVENTS`` there.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import zmq
from zmq.utils.monitor import parse_monitor_message

from .core.errors import ClosedError, TimeoutExpired
from .core.events import IncompleteHandshakes

__all__ = ["SocketCore", "PeerUnreachable", "HWM"]

log = logging.getLogger("zrpc.transport")

# Plain ints: pyzmq's enum flags cost more than the send itself on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
#: As plain ints for the drivers' hot paths (zmq's enums cost a lookup each).
NOBLOCK = _NOBLOCK
POLLIN = int(zmq.POLLIN)
POLLOUT = int(zmq.POLLOUT)
EVENTS = int(zmq.EVENTS)
#: Messages a driver's reader handles in one burst before others get a turn.
BURST = 256
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
# Frames at least this large are sent without a copy (pyzmq copies smaller ones anyway).
_ZERO_COPY = 1 << 16
_HANDSHAKE_OK = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_TRACKED_EVENTS = (_HANDSHAKE_OK | _DISCONNECTED | int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
                   | int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) | int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))

# Handshakes that ended with an event of their own (NO_DETAIL is also what a PUSH peer closing first gives).
_HANDSHAKE_DONE = (_HANDSHAKE_OK, int(zmq.EVENT_HANDSHAKE_FAILED_AUTH), int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))
_OPENED = (int(zmq.EVENT_ACCEPTED), int(zmq.EVENT_CONNECTED))

#: Messages queued per peer (each way) before a send would block; libzmq's default is 1,000.
HWM = 10_000


def _close(sock: zmq.Socket, linger: float) -> None:
    """Close ``sock``, letting zmq deliver what is queued for ``linger`` s in the background."""
    # LINGER is set, then close() called bare: zmq.green sockets (a zerorpc.Context's) take no
    # linger argument.
    try:
        sock.setsockopt(zmq.LINGER, int(linger * 1000))
    except zmq.ZMQError:  # a terminated context: nothing will be delivered anyway
        pass
    sock.close()


class PeerUnreachable(Exception):
    """A ROUTER reply could not be routed: that peer has disconnected."""


class SocketCore:
    """A zmq ``socket_type`` socket set up for zrpc, before any event loop is involved.

    ``setup(sock)`` (the owner's options: CURVE keys, buffers...) runs
    before any bind or connect. With ``track_connections`` a socket monitor
    counts live connections (``connections``) and reports every event to
    ``on_event(event, value, endpoint)``; ``on_connected()`` runs when the
    first one is up, ``on_all_disconnected()`` when the last one drops.
    """

    def __init__(self, socket_type: int, context: zmq.Context, max_message_size: Optional[int] = None,
                 setup: Optional[Callable[[zmq.Socket], None]] = None, track_connections: bool = False) -> None:
        sock = context.socket(socket_type)
        sock.linger = 0
        self._is_router = socket_type == zmq.ROUTER
        if self._is_router:
            # Learn that a peer is gone (EHOSTUNREACH) instead of dropping replies silently.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A burst of heartbeats or replies to one peer (thousands of calls in flight or
        # waiting) must fit its queue: what a frozen peer can pin is bounded by this.
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        if max_message_size:
            # Hard backstop well above the soft limit, which is answered with an ERR.
            sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_size)
        if setup is not None:
            setup(sock)
        self._sock = sock
        self._closed = False
        self.endpoints: List[str] = []
        self._ipc_files: List[str] = []  # socket files we bound, removed on close
        #: While the driver hands a message on: the zmq Frame of its payload (connection metadata).
        self.frame: Optional[zmq.Frame] = None
        self.on_event: Optional[Callable[[int, int, str], None]] = None
        self.on_all_disconnected: Optional[Callable[[], None]] = None
        self.on_connected: Optional[Callable[[], None]] = None
        #: A socket meant for a single peer (a client's bound socket): ``on_crowded()`` runs when a second connects.
        self.bound_peer_limit = False
        self.on_crowded: Optional[Callable[[], None]] = None
        #: Connections whose handshake completed and that have not dropped since.
        self.connections = 0
        self._monitor: Optional[zmq.Socket] = None
        self._handshakes: Optional[IncompleteHandshakes] = None
        if self._is_router:
            # Log why a zerorpc Pusher/Publisher aimed at a server loses its events (libzmq says nothing).
            self._handshakes = IncompleteHandshakes(_OPENED, _DISCONNECTED, _HANDSHAKE_DONE)
            self._monitor = sock.get_monitor_socket(_TRACKED_EVENTS | _OPENED[0] | _OPENED[1])
        elif track_connections:
            # ZMQ_IMMEDIATE would give "send only on live connections" for
            # free, but it discards replies already received from a peer
            # that then disconnects (a server's last reply before it exits).
            # A socket monitor tells which connections are up instead.
            self._monitor = sock.get_monitor_socket(_TRACKED_EVENTS)

    # -- endpoints -------------------------------------------------------
    def bind(self, endpoint: str) -> str:
        """Bind; return the endpoint actually bound (``tcp://127.0.0.1:*`` picks a free port)."""
        self._check_open()
        self._sock.bind(endpoint)
        bound = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.endpoints.append(bound)
        if bound.startswith("ipc://") and not bound.startswith("ipc://@"):
            self._ipc_files.append(bound[len("ipc://"):])
        log.debug("bound %s", bound)
        return bound

    def connect(self, endpoint: str) -> str:
        """Connect (zmq reconnects by itself if the peer comes and goes)."""
        self._check_open()
        self._sock.connect(endpoint)
        self.endpoints.append(endpoint)
        log.debug("connecting to %s", endpoint)
        return endpoint

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def socket(self) -> zmq.Socket:
        """The zmq socket (for its identity; do not send or receive on it)."""
        return self._sock

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("socket is closed")

    # -- sending ---------------------------------------------------------
    def after_send(self) -> None:
        """Called after every send attempt: the driver re-checks ZMQ_EVENTS (the FD's edge may be gone)."""

    def try_send(self, frames: Sequence[Any]) -> bool:
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
            self.after_send()
            return False
        except zmq.ZMQError as exc:
            self.after_send()
            if exc.errno == zmq.EHOSTUNREACH:
                raise PeerUnreachable(str(exc)) from None
            if self._closed:
                raise ClosedError("socket is closed") from None
            raise
        self.after_send()
        return True

    def send_waits(self, frames: Sequence[Any], deadline: Optional[float],
                   timeout: Optional[float]) -> Iterator[Tuple[Optional[float], bool]]:
        """The waits of a send whose first ``try_send`` found the socket full, until it goes.

        Yields ``(seconds, True)`` for a ROUTER, whose POLLOUT means "some
        pipe has room", not ours: sleep, then try again; the sleeps double up
        to 0.5 s, so thousands of replies to a frozen peer do not spin the CPU
        until heartbeats declare it lost. Other sockets yield ``(seconds left
        or None, False)``: wait until writable. Raises TimeoutExpired(timeout)
        once ``deadline`` (time.monotonic()) passed: then nothing was sent.
        """
        backoff = 0.001
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(timeout, "while sending (no peer is taking messages)")
            if self._is_router:
                yield (backoff if remaining is None else min(backoff, remaining)), True
                backoff = min(backoff * 2, 0.5)
            else:
                yield remaining, False
            if self.try_send(frames):
                return

    # -- the monitor -------------------------------------------------------
    def read_monitor(self) -> bool:
        """Handle every monitor event queued now; False once the monitor can never read again."""
        monitor = self._monitor
        if monitor is None or self._closed:
            return False
        while True:
            try:
                frames = monitor.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return True
            except zmq.ZMQError:
                return False
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
                if self.connections == 1 and self.on_connected is not None:
                    self.on_connected()
                if self.connections > 1 and self.on_crowded is not None:
                    self.on_crowded()
            elif event == _DISCONNECTED and self.connections:
                self.connections -= 1
                if not self.connections and self.on_all_disconnected is not None:
                    self.on_all_disconnected()
            self.connections_changed()

    def connections_changed(self) -> None:
        """Called after every monitor event: a driver wakes the senders waiting for a live connection."""

    # -- closing -----------------------------------------------------------
    def close_socket(self, linger: float) -> None:
        """Release the monitor and the socket (zmq delivers what is queued for ``linger`` s, in the background)."""
        self._closed = True
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:  # a terminated context: the monitor goes with the socket
                pass
            _close(self._monitor, 0.0)
        _close(self._sock, linger)
        for path in self._ipc_files:
            # libzmq leaves the file behind; a stale one misleads the next bind.
            try:
                os.unlink(path)
            except OSError:
                pass
