"""What the asyncio Client and Server share: the loop, one heartbeat task, waiting to send, closing.

This module joins a core session to sockets on one asyncio loop. It never
decides what an event means: the session does, and the subclasses carry
out what it says.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping, Optional

import zmq

from ..core.channel import Channel
from ..core.session import Session
from ..nodes import NodeBase
from .transport import Transport

__all__ = ["Node"]

log = logging.getLogger("zrpc")

def running_loop(cls: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(f"make a zrpc.aio.{cls} inside a coroutine: it belongs to the running "
                           "asyncio loop") from None


class Node(NodeBase):
    """Base of the asyncio Client and Server: the loop, a heartbeat task, sending and clean closing."""

    def _init_node(self, session: Session, context: Optional[zmq.Context],
                   socket_options: Optional[Mapping[int, Any]]) -> None:
        self._loop = running_loop(self._kind)
        self._tasks: "set[asyncio.Task]" = set()  # see _background
        super()._init_node(session, context, socket_options)

    def _make_transport(self, track_connections: bool) -> Transport:
        return Transport(self._socket_type, self._on_frames, self._context, self._loop,
                         self.max_message_size, self._setup_socket, track_connections=track_connections)

    def _background(self, coro: Any) -> asyncio.Task:
        """Run ``coro`` as a task this node keeps a reference to until it is done (the loop keeps
        only weak ones: an unreferenced task may be collected mid-flight)."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn_heartbeats(self) -> asyncio.Task:
        return self._loop.create_task(self._heartbeat_loop())

    @staticmethod
    def _stop_heartbeats(heartbeats: asyncio.Task) -> None:
        if heartbeats is not asyncio.current_task():
            heartbeats.cancel()

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self._loop.call_soon(callback, *args)

    async def _heartbeat_loop(self) -> None:
        tick = self._session.tick
        while not self._closed:
            await asyncio.sleep(tick)
            self._beat(time.monotonic())

    async def _close_io(self) -> None:
        """Close every socket, then wait (at most CLOSE_LINGER) until zmq has sent what was queued."""
        self._close_sockets()
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
