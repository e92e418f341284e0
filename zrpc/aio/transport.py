"""One ZeroMQ socket driven by an asyncio loop: a reader callback on ZMQ_FD and non-blocking sends.

This module owns the sockets of the asyncio driver, their endpoints and
options, and connection tracking. It knows frames, never events: decoding
and routing belong to the owner's ``on_frames`` callback.

Why not ``zmq.asyncio``: it wraps every recv and send in a future. Here a
plain socket's ZMQ_FD is registered with ``loop.add_reader``, and the
callback drains every message already queued, straight into ``on_frames``
(no task per message, no switch). ZMQ_FD is edge-triggered: it signals
only a change of ZMQ_EVENTS, and a send may consume that signal. So the
drain runs until EVENTS says nothing is left (checked before every sleep),
and every send re-checks EVENTS and schedules a drain if input waits.

Connections are tracked with a socket monitor, as in the gevent driver,
not with ZMQ_IMMEDIATE (which discards replies already received from a
server that then disconnects).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, List, Optional, Sequence

import zmq

from ..sockets import BURST as _BURST, EVENTS as _EVENTS, NOBLOCK as _NOBLOCK
from ..sockets import POLLIN as _POLLIN, POLLOUT as _POLLOUT, PeerUnreachable, SocketCore

__all__ = ["Transport", "PeerUnreachable"]

log = logging.getLogger("zrpc.transport")



class Transport(SocketCore):
    """A zmq ``socket_type`` socket on ``loop`` whose incoming messages go to ``on_frames(frames)``.

    ``on_frames`` runs inside the loop's reader callback and must not block
    (it may create tasks and set futures). ``close()`` never blocks: zmq
    delivers what is queued in the background for at most ``linger``.
    """

    def __init__(self, socket_type: int, on_frames: Callable[[List[Any]], None], context: zmq.Context,
                 loop: asyncio.AbstractEventLoop, max_message_size: Optional[int] = None,
                 setup: Optional[Callable[[zmq.Socket], None]] = None, track_connections: bool = False) -> None:
        super().__init__(socket_type, context, max_message_size, setup, track_connections)
        self._loop = loop
        self._on_frames = on_frames
        self._drain_scheduled = False
        self._fd = self._sock.getsockopt(zmq.FD)
        self._write_waiters: List[asyncio.Future] = []
        self._change_waiters: List[asyncio.Future] = []
        self._monitor_fd: Optional[int] = self._monitor.getsockopt(zmq.FD) if self._monitor is not None else None
        self._started = False

    def start(self) -> None:
        """Start reading (idempotent): from now on ``on_frames`` sees incoming messages."""
        if self._started or self._closed:
            return
        self._started = True
        self._loop.add_reader(self._fd, self._poll)
        if self._monitor is not None:
            self._loop.add_reader(self._monitor_fd, self._read_monitor)
            self._read_monitor()  # events queued before the reader was registered
        self._schedule_drain()  # messages queued before: the FD will not signal them again

    def close(self, linger: float = 0.0) -> None:
        """Release the socket now; waiting senders raise ClosedError. Never blocks."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._loop.remove_reader(self._fd)
            if self._monitor_fd is not None:
                self._loop.remove_reader(self._monitor_fd)
        self._wake(self._write_waiters)
        self._wake(self._change_waiters)
        self.close_socket(linger)

    @staticmethod
    def _wake(waiters: List[asyncio.Future]) -> None:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        waiters.clear()

    # -- connections ---------------------------------------------------------
    def _read_monitor(self) -> None:
        self.read_monitor()

    def connections_changed(self) -> None:
        self._wake(self._change_waiters)

    def wake_senders(self) -> None:
        """Wake tasks waiting to send, so they re-check why they cannot."""
        self._wake(self._write_waiters)
        self._wake(self._change_waiters)

    def changed(self) -> asyncio.Future:
        """A future done at the next change of connections or room (or at close)."""
        waiter = self._loop.create_future()
        if self._closed:
            waiter.set_result(None)
        else:
            self._change_waiters.append(waiter)
        return waiter

    # -- receiving -------------------------------------------------------------
    def _poll(self) -> None:
        """Act on ZMQ_EVENTS: drain input now, wake senders waiting for room."""
        if self._closed or not self._started:
            return
        try:
            events = self._sock.getsockopt(_EVENTS)
        except zmq.ZMQError:
            return
        if events & _POLLOUT and self._write_waiters:
            self._wake(self._write_waiters)
            self._wake(self._change_waiters)
        if events & _POLLIN:
            self._drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._scheduled_drain)

    def _scheduled_drain(self) -> None:
        self._drain_scheduled = False
        self._poll()

    def drain(self) -> None:
        """Hand on every message already received, now (before treating the connection as gone)."""
        while not self._closed and self._drain():
            pass

    def _drain(self) -> bool:
        """Hand on up to a burst of queued messages; True if more may be waiting (a drain is scheduled)."""
        sock = self._sock
        recv = sock.recv
        events = sock.getsockopt
        on_frames = self._on_frames
        for _ in range(_BURST):
            if self._closed:
                return False
            try:
                # Checked before "sleeping": the FD will not signal input already queued.
                if not events(_EVENTS) & _POLLIN:
                    return False
                frame = recv(_NOBLOCK, copy=False)
                frames: List[Any] = []
                while frame.more:
                    frames.append(frame.bytes)
                    frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if not self._closed:
                    log.error("receive failed, the socket stops reading: %s", exc)
                return False
            frames.append(frame.buffer)
            self.frame = frame
            try:
                on_frames(frames)
            except Exception:
                log.exception("error while handling an incoming message (ignored)")
            self.frame = None
        self._schedule_drain()  # a long burst: let other callbacks run, then go on
        return True

    # -- sending -----------------------------------------------------------------
    def after_send(self) -> None:
        # The send may have consumed the edge announcing input: look again soon.
        self._schedule_drain()

    def writable(self) -> asyncio.Future:
        """A future done once the socket may take a message (at once if it can now), or at close."""
        waiter = self._loop.create_future()
        if self._closed:
            waiter.set_result(None)
            return waiter
        self._write_waiters.append(waiter)
        self._poll()
        return waiter

    async def send(self, frames: Sequence[Any], deadline: Optional[float] = None,
                   timeout: Optional[float] = None) -> None:
        """Send, waiting while the socket is full, until ``deadline`` (time.monotonic()).

        Raises TimeoutExpired(timeout) if the deadline passes first: then nothing was sent.
        """
        if self.try_send(frames):
            return
        for seconds, sleep in self.send_waits(frames, deadline, timeout):
            if sleep:
                await asyncio.sleep(seconds)
                continue
            try:
                await asyncio.wait_for(asyncio.shield(self.writable()), seconds)
            except asyncio.TimeoutError:
                pass
