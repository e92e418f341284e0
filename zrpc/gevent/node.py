"""What the gevent Client and Server share: one heartbeat greenlet, waiting to send, and closing.

This module joins a core session to sockets. It never decides what an
event means for a call: the session does, and the Client and Server
subclasses carry out what it says.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import gevent

from ..core.channel import Channel
from ..nodes import NodeBase
from .transport import Transport

__all__ = ["Node"]

log = logging.getLogger("zrpc")


class Node(NodeBase):
    """Base of Client and Server: a greenlet for heartbeats, sending and clean closing around a core session."""

    def _make_transport(self, track_connections: bool) -> Transport:
        return Transport(self._socket_type, self._on_frames, self._context, self.max_message_size,
                         self._setup_socket, track_connections=track_connections)

    def _spawn_heartbeats(self) -> gevent.Greenlet:
        return gevent.spawn(self._heartbeat_loop)

    @staticmethod
    def _stop_heartbeats(heartbeats: gevent.Greenlet) -> None:
        if heartbeats is not gevent.getcurrent():
            heartbeats.kill(block=False)

    @staticmethod
    def _call_soon(callback: Callable[..., None], *args: Any) -> None:
        gevent.get_hub().loop.run_callback(callback, *args)

    def _close_io(self) -> None:
        """Close every socket, then wait (at most CLOSE_LINGER) until zmq has sent what they had queued."""
        self._close_sockets()
        if self._own_context:
            # term() returns once every socket's queue is flushed or its linger
            # ran out; in a thread, so the hub keeps running meanwhile.
            try:
                gevent.get_hub().threadpool.spawn(self._context.term).get(timeout=self.CLOSE_LINGER + 1)
            except gevent.Timeout:
                log.warning("zmq did not finish closing within %gs", self.CLOSE_LINGER + 1)

    def _heartbeat_loop(self) -> None:
        tick = self._session.tick
        while not self._closed:
            gevent.sleep(tick)
            self._beat(time.monotonic())

    def _send(self, channel: Channel, payload: bytes, deadline: Optional[float] = None,
              timeout: Optional[float] = None) -> None:
        """Send one encoded event on ``channel``, waiting while the socket is full (until ``deadline``)."""
        self._transport_of(channel).send(self._frames(channel, payload), deadline, timeout)
        channel.last_sent = time.monotonic()
