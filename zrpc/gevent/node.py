"""What the gevent Client and Server share: sockets, one heartbeat greenlet, sending, and closing.

This module joins a core session to sockets. It never decides what an
event means for a call: the session does, and the Client and Server
subclasses carry out what it says.
"""
from __future__ import annotations

import logging
import time
from typing import Any, List, Mapping, Optional

import gevent
import zmq

from ..core.channel import Channel
from ..core.errors import ClosedError
from ..core.session import Session
from ..nodes import NodeBase
from .transport import PeerUnreachable, Transport

__all__ = ["Node"]

log = logging.getLogger("zrpc")


class Node(NodeBase):
    """Base of Client and Server: sockets, heartbeats and clean closing around a core session."""

    #: Seconds zmq may still spend delivering replies and cancels already
    #: queued when a node closes; close() waits for them at most this long.
    CLOSE_LINGER = 0.5

    def __init__(self, session: Session, context: Optional[zmq.Context],
                 socket_options: Optional[Mapping[int, Any]] = None) -> None:
        self._init_node(session, context, socket_options)
        self._heartbeats: Optional[gevent.Greenlet] = None

    def _new_transport(self) -> Transport:
        transport = Transport(self._socket_type, self._on_frames, self._context, self.max_message_size,
                              self._setup_socket, track_connections=self._socket_type == zmq.DEALER)
        self._transports.append(transport)
        if self._started:
            transport.start()
        return transport

    # -- life cycle --------------------------------------------------------
    def _start_io(self) -> None:
        self._started = True
        for transport in self._transports:
            transport.start()
        if self._session.tick and self._heartbeats is None:
            self._heartbeats = gevent.spawn(self._heartbeat_loop)

    def _close_io(self) -> None:
        """Close every socket, then wait (at most CLOSE_LINGER) until zmq has sent what they had queued."""
        self._closed = True
        hb, self._heartbeats = self._heartbeats, None
        if hb is not None and hb is not gevent.getcurrent():
            hb.kill(block=False)
        for transport in self._transports:
            transport.close(self.CLOSE_LINGER)
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

    # -- sending ------------------------------------------------------------
    def _on_unreachable(self, channel: Channel) -> None:
        """The socket says the channel's peer is gone; treat it as lost."""
        self._session.table.discard(channel)
        self._on_lost(channel)

    def _send(self, channel: Channel, payload: bytes) -> None:
        """Send one encoded event on ``channel``, waiting while the socket is full."""
        self._transport_of(channel).send(self._frames(channel, payload))
        channel.last_sent = time.monotonic()

    def _send_nowait(self, channel: Channel, payload: bytes) -> bool:
        """Send a control event if the socket can take it now; never blocks.

        Returns False if it could not be sent: the socket is full or closed,
        or the peer is gone (then the channel is failed as lost, soon).
        """
        try:
            return self._transport_of(channel).try_send(self._frames(channel, payload))
        except PeerUnreachable:
            gevent.get_hub().loop.run_callback(self._on_unreachable, channel)
        except ClosedError:
            pass  # closing: the channel is going away anyway
        return False
