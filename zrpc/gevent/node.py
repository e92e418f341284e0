"""What a client and a server share: a transport, a channel table and one heartbeat greenlet.

This module joins the sans-I/O channel table to a socket. It never decides
what an event means for a call; the Client and Server subclasses do.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Mapping, Optional

import gevent
import zmq

from ..core import protocol
from ..core.channel import Channel, ChannelTable
from .transport import PeerUnreachable, Transport

__all__ = ["Node", "DEFAULT_MAX_MESSAGE_SIZE", "Tracer"]

log = logging.getLogger("zrpc")

#: ``trace(direction, header, name, args)``: sees every event, ``direction`` "send" or "recv".
Tracer = Callable[[str, Any, str, Any], None]

#: Largest message accepted by default (bytes). Larger ones get a clear ERR.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class Node:
    """Base of Client and Server: sockets, channel table, heartbeats and clean closing."""

    _socket_type: int = zmq.DEALER

    def __init__(
        self,
        heartbeat: Optional[float],
        context: Optional[zmq.Context],
        max_message_size: Optional[int],
        socket_options: Optional[Mapping[int, Any]] = None,
        trace: Optional[Tracer] = None,
    ) -> None:
        if heartbeat is not None and heartbeat <= 0:
            heartbeat = None
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self._context = context
        self._socket_options = dict(socket_options or {})
        #: Called with every new socket before it binds or connects (security hooks in here).
        self._socket_setups: List[Callable[[zmq.Socket], None]] = []
        self._trace = trace
        self._table = ChannelTable(heartbeat)
        self._ids = protocol.message_ids()
        self._transports: List[Transport] = []
        self._heartbeats: Optional[gevent.Greenlet] = None
        self._started = False
        self._closed = False

    def _new_transport(self) -> Transport:
        transport = Transport(self._socket_type, self._on_frames, self._context, self.max_message_size,
                              self._setup_socket)
        self._transports.append(transport)
        if self._started:
            transport.start()
        return transport

    def _setup_socket(self, sock: zmq.Socket) -> None:
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)
        for setup in self._socket_setups:
            setup(sock)

    @property
    def endpoints(self) -> List[str]:
        """Every endpoint bound or connected, in order."""
        return [ep for transport in self._transports for ep in transport.endpoints]

    @property
    def closed(self) -> bool:
        return self._closed

    # -- life cycle --------------------------------------------------------
    def _start_io(self) -> None:
        self._started = True
        for transport in self._transports:
            transport.start()
        if self._table.tick and self._heartbeats is None:
            self._heartbeats = gevent.spawn(self._heartbeat_loop)

    #: Seconds zmq may still spend delivering replies and cancels already
    #: queued when a node closes (in the background: close never blocks).
    CLOSE_LINGER = 0.5

    def _close_io(self) -> None:
        self._closed = True
        hb, self._heartbeats = self._heartbeats, None
        if hb is not None and hb is not gevent.getcurrent():
            hb.kill(block=False)
        for transport in self._transports:
            transport.close(self.CLOSE_LINGER)

    def _heartbeat_loop(self) -> None:
        tick = self._table.tick
        while not self._closed:
            gevent.sleep(tick)
            now = time.monotonic()
            due, lost = self._table.sweep(now)
            for channel in due:
                self._table.pinged(channel, now)
                self._emit_nowait(channel, protocol.HEARTBEAT, [0])
            for channel in lost:
                self._table.discard(channel)
                self._on_lost(channel)

    # -- sending ------------------------------------------------------------
    def _frames(self, channel: Channel, payload: bytes) -> List[Any]:
        raise NotImplementedError

    def _link(self, channel: Channel) -> Transport:
        """The socket a channel's events travel on."""
        raise NotImplementedError

    def _on_frames(self, frames: List[bytes]) -> None:
        raise NotImplementedError

    def _on_lost(self, channel: Channel) -> None:
        raise NotImplementedError

    def _on_unreachable(self, channel: Channel) -> None:
        """The socket says the channel's peer is gone; by default, treat it as lost."""
        self._table.discard(channel)
        self._on_lost(channel)

    def _payload(self, channel_id: Any, name: str, args: Any) -> bytes:
        """Encode an event on channel ``channel_id`` (a fresh message id each time)."""
        header = protocol.reply_header(next(self._ids), channel_id)
        payload = protocol.encode(header, name, args)
        if self._trace is not None:
            self._trace("send", header, name, args)
        return payload

    def _send(self, channel: Channel, payload: bytes) -> None:
        """Send one encoded event on ``channel``, waiting while the socket is full."""
        self._link(channel).send(self._frames(channel, payload))
        channel.last_sent = time.monotonic()

    def _emit_nowait(self, channel: Channel, name: str, args: Any) -> bool:
        """Send a control event if the socket can take it now; never blocks, never raises."""
        try:
            return self._link(channel).try_send(self._frames(channel, self._payload(channel.channel_id, name, args)))
        except PeerUnreachable:
            gevent.get_hub().loop.run_callback(self._on_unreachable, channel)
        except Exception as exc:  # closed socket: the channel is going away anyway
            log.debug("could not send %s: %s", name, exc)
        return False
