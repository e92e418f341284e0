"""Channels: one call's conversation, and the table of open ones.

This module owns channel state: when each side last spoke (heartbeats), and
how many stream items each side may still send (credit). It never touches a
socket or a greenlet, and it never reads a clock: callers pass ``now``.

Theory of operation
-------------------
* A channel opens with its first event (the request) and is keyed by
  ``(peer, channel_id)``. Every later event of either side refers to it.
* Heartbeats are driven by one periodic ``ChannelTable.sweep(now)`` for all
  channels, never by a timer per call. A channel that has been open for less
  than one interval is never pinged, so short calls cost no heartbeat at all.
  Each sweep returns the channels that are due a ping (our last ``_zpc_hb``
  on it, or its opening, is an interval old) and those whose remote has been
  silent for two intervals (lost). As in zerorpc, the remote's silence is
  counted from our first ping, not from the request: a passive zerorpc
  client only starts its own heartbeats once it hears ours.
* Other traffic never stands in for a heartbeat: zerorpc (Python and node)
  counts only ``_zpc_hb`` events as signs of life, so a stream whose items
  keep flowing still carries a ping every interval. Hence ``last_ping``
  (when we last sent ``_zpc_hb``) is kept apart from ``last_sent`` (when we
  last sent anything), and only ``last_ping`` drives the schedule.
* Flow control (zerorpc's ``_zpc_more``): a sender may send one event per
  unit of credit; each side starts with one. ``StreamWindow`` is the
  receiver's half: it decides when, and how much, credit to grant.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Iterator, List, Optional, Tuple

__all__ = ["Channel", "ChannelTable", "StreamWindow"]


class Channel:
    """State shared by both ends of a call. Subclassed by the client and server calls."""

    __slots__ = ("key", "channel_id", "peer", "last_sent", "last_ping", "last_recv", "pinged", "__weakref__")

    def __init__(self, key: Hashable, channel_id: Any, peer: Any, now: float) -> None:
        self.key = key
        self.channel_id = channel_id
        self.peer = peer
        #: When we last sent any event on the channel (the drivers keep it; heartbeats ignore it).
        self.last_sent = now
        #: When we last sent ``_zpc_hb`` on it, or when it opened: the heartbeat schedule.
        self.last_ping = now
        #: When the remote last sent anything on it.
        self.last_recv = now
        self.pinged = False


class ChannelTable:
    """Open channels by key, and the single heartbeat schedule for all of them.

    ``interval`` is the heartbeat period in seconds, or None for no heartbeats.
    """

    __slots__ = ("channels", "interval")

    def __init__(self, interval: Optional[float]) -> None:
        self.channels: Dict[Hashable, Channel] = {}
        self.interval = interval if interval else None

    def __len__(self) -> int:
        return len(self.channels)

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self.channels.values()))

    def get(self, key: Hashable) -> Optional[Channel]:
        return self.channels.get(key)

    def add(self, channel: Channel) -> None:
        self.channels[channel.key] = channel

    def discard(self, channel: Channel) -> None:
        """Forget ``channel``; forgetting it twice is harmless."""
        if self.channels.get(channel.key) is channel:
            del self.channels[channel.key]

    @property
    def tick(self) -> Optional[float]:
        """How often ``sweep`` should run: a quarter interval.

        Pings then go out at most 1.25 intervals apart (peers give up after
        two), and a silent remote is noticed within 2.25 intervals.
        """
        return self.interval / 4 if self.interval else None

    @staticmethod
    def record_ping(channel: Channel, now: float) -> None:
        """Record that a heartbeat was sent on ``channel`` at ``now``: the next is due an interval later."""
        if not channel.pinged:
            channel.pinged = True
            channel.last_recv = max(channel.last_recv, now)
        channel.last_ping = channel.last_sent = now

    def sweep(self, now: float) -> Tuple[List[Channel], List[Channel]]:
        """Return (channels due a heartbeat, channels whose remote is lost) at time ``now``.

        A channel is due once its last ping (or its opening) is an interval
        old, whatever else was sent on it since. The caller sends the pings
        (and records them with ``record_ping``) and fails the lost channels; lost
        channels are not also listed as due.
        """
        interval = self.interval
        if not interval:
            return [], []
        due: List[Channel] = []
        lost: List[Channel] = []
        ping_limit = now - interval
        lost_limit = now - 2 * interval
        for channel in self.channels.values():
            if channel.last_recv < lost_limit and channel.pinged:
                lost.append(channel)
            elif channel.last_ping <= ping_limit:
                due.append(channel)
        return due, lost


class StreamWindow:
    """The receiving side of flow control: how much credit to grant, and when.

    The sender starts with one unit of credit. The receiver buffers at most
    ``size`` items; whenever the items it may still receive (granted but not
    yet arrived, plus buffered) drop to half the window, it tops them up.
    So memory stays bounded by ``size`` items while a fast reader is never
    starved waiting for a round trip.
    """

    __slots__ = ("size", "granted", "buffered")

    def __init__(self, size: int = 256) -> None:
        if size < 2:
            raise ValueError("a stream window must hold at least 2 items")
        self.size = size
        self.granted = 1  # the implicit initial credit of the protocol
        self.buffered = 0

    def received(self) -> None:
        """An item arrived (credit is granted as the reader takes items, never here)."""
        self.granted -= 1
        self.buffered += 1

    def taken(self) -> int:
        """The reader took an item; return the credit due now (0 for none), not yet counted as granted."""
        self.buffered -= 1
        return self.due()

    def due(self) -> int:
        """Credit to grant now: tops the window up once half of it is free, else 0.

        Credit counts as granted only once :meth:`sent` says it went out, so
        a grant that could not be sent is due again, never lost.
        """
        outstanding = self.granted + self.buffered
        if outstanding * 2 > self.size:
            return 0
        return self.size - outstanding

    def sent(self, amount: int) -> None:
        """``amount`` of credit reached the socket: the sender may now use it."""
        self.granted += amount

    @property
    def overflowing(self) -> bool:
        """True if the sender sent more than it was granted."""
        return self.granted < 0
