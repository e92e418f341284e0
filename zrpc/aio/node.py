"""What the asyncio Client and Server share: the loop, sockets, one heartbeat task, sending, closing.

This module joins a core session to sockets on one asyncio loop. It never
decides what an event means: the session does, and the subclasses carry
out what it says.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, List, Mapping, Optional

import zmq

from ..core.channel import Channel
from ..core.errors import ClosedError
from ..core.session import Session
from ..nodes import NodeBase
from .transport import PeerUnreachable, Transport

__all__ = ["Node"]

log = logging.getLogger("zrpc")

def running_loop(cls: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(f"make a zrpc.aio.{cls} inside a coroutine: it belongs to the running "
                           "asyncio loop") from None


class Node(NodeBase):
    """Base of the asyncio Client and Server: sockets, heartbeats and clean closing around a session."""

    _kind = "Node"

    #: Seconds zmq may still spend delivering what is queued when a node closes.
    CLOSE_LINGER = 0.5

    def __init__(self, session: Session, context: Optional[zmq.Context],
                 socket_options: Optional[Mapping[int, Any]]) -> None:
        self._loop = running_loop(self._kind)
        self._init_node(session, context, socket_options)
        self._heartbeats: Optional[asyncio.Task] = None

    def _new_transport(self) -> Transport:
        if self._closed:
            raise ClosedError(f"the {self._kind.lower()} is closed")
        transport = Transport(self._socket_type, self._on_frames, self._context, self._loop,
                              self.max_message_size, self._setup_socket,
                              track_connections=self._socket_type == zmq.DEALER)
        self._transports.append(transport)
        if self._started:
            transport.start()
        return transport

    def _start_io(self) -> None:
        """Start reading every socket, and the heartbeat task."""
        self._started = True
        for transport in self._transports:
            transport.start()
        if self._session.tick and self._heartbeats is None and not self._closed:
            self._heartbeats = self._loop.create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        tick = self._session.tick
        while not self._closed:
            await asyncio.sleep(tick)
            self._beat(time.monotonic())

    async def _close_io(self) -> None:
        """Close every socket, then wait (at most CLOSE_LINGER) until zmq has sent what was queued."""
        self._closed = True
        hb, self._heartbeats = self._heartbeats, None
        if hb is not None and hb is not asyncio.current_task():
            hb.cancel()
        for transport in self._transports:
            transport.close(self.CLOSE_LINGER)
        if self._own_context:
            # term() returns once queues are flushed or linger ran out; in a thread, so the loop runs on.
            try:
                await asyncio.wait_for(self._loop.run_in_executor(None, self._context.term),
                                       self.CLOSE_LINGER + 1)
            except asyncio.TimeoutError:
                log.warning("zmq did not finish closing within %gs", self.CLOSE_LINGER + 1)

    # -- sending ------------------------------------------------------------------
    async def _send(self, channel: Channel, payload: bytes, deadline: Optional[float] = None,
                    timeout: Optional[float] = None) -> None:
        """Send one encoded event on ``channel``, waiting while the socket is full."""
        await self._transport_of(channel).send(self._frames(channel, payload), deadline, timeout)
        channel.last_sent = time.monotonic()

    def _send_nowait(self, channel: Channel, payload: bytes) -> bool:
        """Send a control event if the socket can take it now; never waits.

        False if it could not go: the socket is full or closed, or the peer is
        gone (then the channel is failed as lost, soon).
        """
        try:
            return self._transport_of(channel).try_send(self._frames(channel, payload))
        except PeerUnreachable:
            self._loop.call_soon(self._on_unreachable, channel)
        except ClosedError:
            pass
        return False

    def _on_unreachable(self, channel: Channel) -> None:
        self._session.table.discard(channel)
        self._on_lost(channel)
