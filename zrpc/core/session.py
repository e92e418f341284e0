"""What both sessions share: the channel table, message ids, encoding with a trace hook, heartbeats.

A session is one end of zerorpc v3 without I/O: a driver hands it the
payloads it receives and the time (``now``), and sends the payloads it
returns. It never touches a socket, a greenlet, a task or a clock of its own.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from . import protocol
from .channel import Channel, ChannelTable

__all__ = ["Session", "Tracer", "DEFAULT_MAX_MESSAGE_SIZE"]

#: ``trace(direction, header, name, args)``: sees every event, ``direction`` "send" or "recv".
Tracer = Callable[[str, Any, str, Any], None]

#: Largest message accepted by default (bytes). Larger ones get a clear ERR.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class Session:
    """Base of ServerSession and ClientSession."""

    def __init__(self, heartbeat: Optional[float], max_message_size: Optional[int],
                 trace: Optional[Tracer] = None) -> None:
        if heartbeat is not None and heartbeat <= 0:
            heartbeat = None
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.trace = trace
        self.table = ChannelTable(heartbeat)
        self._ids = protocol.message_ids()

    def encode(self, channel_id: Any, name: str, args: Any) -> bytes:
        """Encode an event on channel ``channel_id`` (a fresh message id each time)."""
        header = protocol.reply_header(next(self._ids), channel_id)
        payload = protocol.encode(header, name, args)
        if self.trace is not None:
            self.trace("send", header, name, args)
        return payload

    def heartbeats(self, now: float) -> Tuple[List[Tuple[Channel, bytes]], List[Channel]]:
        """The heartbeats due at ``now`` as (channel, payload), and the channels whose remote is lost.

        Lost channels are already forgotten; the driver fails or cancels them.
        The driver calls :meth:`pinged` for each ping that went out: one the
        socket could not take stays due, and the next sweep tries again.
        """
        table = self.table
        due, lost = table.sweep(now)
        pings = [(channel, self.encode(channel.channel_id, protocol.HEARTBEAT, [0])) for channel in due]
        for channel in lost:
            table.discard(channel)
        return pings, lost

    @property
    def tick(self) -> Optional[float]:
        """How often the driver runs :meth:`heartbeats` (seconds; None: never)."""
        return self.table.tick

    def pinged(self, channel: Channel, now: float) -> None:
        """A heartbeat on ``channel`` went out at ``now``."""
        self.table.record_ping(channel, now)

    @property
    def lost_after(self) -> float:
        """Seconds of silence after which the remote is declared lost (0 without heartbeats)."""
        return 2 * (self.heartbeat or 0)
