"""Channel table and flow-control rules, driven by a fake clock: no sockets."""
import pytest

from zrpc.core.channel import Channel, ChannelTable, StreamWindow


def test_a_channel_younger_than_one_interval_is_never_pinged():
    table = ChannelTable(5.0)
    table.add(Channel("k", b"id", None, now=100.0))
    assert table.sweep(104.9) == ([], [])


def test_due_after_an_interval_of_our_silence_and_lost_after_two_of_theirs():
    table = ChannelTable(5.0)
    ch = Channel("k", b"id", None, now=0.0)
    table.add(ch)
    due, lost = table.sweep(5.0)
    assert due == [ch] and lost == []
    table.record_ping(ch, 5.0)
    ch.last_recv = 6.0  # the remote spoke
    assert table.sweep(9.0) == ([], [])
    due, lost = table.sweep(16.5)
    assert lost == [ch] and due == []


def test_silence_counts_from_our_first_ping_like_zerorpc():
    # A passive zerorpc client says nothing until it hears our first heartbeat.
    table = ChannelTable(5.0)
    ch = Channel("k", b"id", None, now=0.0)
    table.add(ch)
    assert table.sweep(7.0) == ([ch], [])  # first ping late in the tick: 7 s of silence so far
    table.record_ping(ch, 7.0)
    assert table.sweep(12.0) == ([ch], [])  # not lost 12 s after the request...
    table.record_ping(ch, 12.0)
    assert table.sweep(17.5) == ([], [ch])  # ...but 2 intervals after our first ping


def test_a_busy_channel_still_carries_a_heartbeat_every_interval():
    # zerorpc (node and Python) counts only _zpc_hb as a sign of life: a stream
    # whose items come every quarter interval must be pinged all the same.
    interval = 4.0
    table = ChannelTable(interval)
    ch = Channel("k", b"id", None, now=0.0)
    table.add(ch)
    pings = []
    now = 0.0
    for step in range(1, 81):  # 20 intervals, bounded: a fake clock, no sleeping
        now = step * interval / 4
        ch.last_sent = now  # a stream item, as Node._send records it
        ch.last_recv = now  # the reader grants credit and pings back
        due, lost = table.sweep(now)  # the sweep runs every tick (a quarter interval)
        assert lost == []
        if due == [ch]:
            table.record_ping(ch, now)
            pings.append(now)
    assert pings, "a busy channel was never pinged"
    assert pings[0] >= interval  # younger than one interval: never pinged
    gaps = [b - a for a, b in zip([0.0] + pings, pings)]
    assert max(gaps) <= 1.25 * interval  # well within the 2 intervals a peer waits
    assert min(gaps) >= interval  # and no more often than once an interval
    assert len(pings) == 20


def test_a_busy_young_channel_is_never_pinged():
    table = ChannelTable(5.0)
    ch = Channel("k", b"id", None, now=100.0)
    table.add(ch)
    for t in (101.0, 102.5, 104.0, 104.9):
        ch.last_sent = t
        assert table.sweep(t) == ([], [])
    assert table.sweep(105.0) == ([ch], [])


def test_no_heartbeat_means_no_schedule():
    table = ChannelTable(None)
    table.add(Channel("k", b"id", None, now=0.0))
    assert table.tick is None
    assert table.sweep(1e9) == ([], [])


def test_sweep_tick_keeps_pings_within_one_and_a_quarter_intervals():
    assert ChannelTable(4.0).tick == 1.0


def test_discard_is_idempotent_and_only_removes_that_channel():
    table = ChannelTable(1.0)
    a = Channel("k", b"a", None, 0.0)
    b = Channel("k", b"b", None, 0.0)
    table.add(a)
    table.add(b)  # same key replaces a
    table.discard(a)
    assert table.get("k") is b
    table.discard(b)
    table.discard(b)
    assert len(table) == 0


def _take(window: StreamWindow) -> int:
    """The reader takes an item and the due credit is sent at once."""
    grant = window.taken()
    window.sent(grant)
    return grant


def test_stream_window_grants_when_half_empty_and_bounds_buffering():
    window = StreamWindow(8)
    window.received()  # the first item uses the implicit credit of 1
    assert _take(window) == 8  # reader took it: the window opens fully
    for _ in range(8):
        window.received()
    assert not window.overflowing
    grants = [_take(window) for _ in range(8)]
    # Credit is topped up once half the window is free, never beyond the window.
    assert grants[:3] == [0, 0, 0] and grants[3] == 4
    assert window.granted + window.buffered <= 8
    window.received()
    assert window.granted + window.buffered <= 8


def test_stream_window_credit_that_was_not_sent_stays_due():
    window = StreamWindow(8)
    window.received()
    assert window.taken() == 8  # due, but the socket could not take the _zpc_more
    assert window.due() == 8  # still due: nothing was counted
    window.sent(3)  # a smaller grant went out later
    assert window.due() == 5 and window.granted == 3
    window.sent(5)
    assert window.due() == 0 and window.granted == 8


def test_stream_window_detects_a_sender_that_ignores_credit():
    window = StreamWindow(4)
    window.received()
    window.received()
    assert window.overflowing


def test_stream_window_needs_room():
    with pytest.raises(ValueError):
        StreamWindow(1)
