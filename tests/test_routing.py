"""The router's decisions (zrpc.core.routing) and the header reader, with plain bytes: no sockets.

The processes and sockets around them are tested in tests/test_workers.py.
"""
import msgpack
import pytest

from zrpc.core import protocol
from zrpc.core.protocol import HeaderReader, encode, new_header, reply_header
from zrpc.core.routing import (DROP, FORWARD, PROBE_PEER, SEND, STATUS, ChannelRouter, ForwardedCaller,
                               caller_frame)

ENVELOPE = [b"client-a", b""]


def request(message_id, name="echo", args=(1,)):
    return encode(new_header(message_id), name, list(args))


def event(channel, name, args=None):
    return encode(reply_header(b"m-" + channel, channel), name, args)


# -- HeaderReader ---------------------------------------------------------------------
def test_header_reader_reads_ids_and_name_without_the_args():
    reader = HeaderReader()
    assert reader.read(request(b"id1")) == (b"id1", None, "echo")
    assert reader.read(event(b"id1", "STREAM", b"x" * (1 << 20))) == (b"m-id1", b"id1", "STREAM")
    assert reader.read(encode({"message_id": "node-id", "v": 3, "response_to": "c"}, "OK", [1])) == (
        "node-id", "c", "OK")


@pytest.mark.parametrize("bad", [
    b"", b"\x93", b"not msgpack at all", msgpack.packb([1, 2]), msgpack.packb([{"v": 3}, "x", []]),
    msgpack.packb([{"message_id": 5}, "x", []]), msgpack.packb([{"message_id": b"a", "response_to": 1.5}, "x", []]),
    msgpack.packb(["header", "x", []]), request(b"a") + b"\x01",
    msgpack.packb([{"message_id": b"a", "k": list(range(1000))}, "x", []]),  # a header too big to bother
])
def test_header_reader_refuses_what_is_not_an_event_and_recovers(bad):
    reader = HeaderReader()
    assert reader.read(bad) is None
    assert reader.read(request(b"next")) == (b"next", None, "echo")  # its buffer was not left dirty


def test_header_reader_reads_only_a_prefix_of_a_huge_event():
    huge = encode(new_header(b"big"), "echo", [b"\x00" * (16 << 20)])
    assert HeaderReader().read(memoryview(huge)) == (b"big", None, "echo")
    # Args cut short: the header of a big event is still read (its worker answers the bad rest);
    # a small one is checked whole.
    assert HeaderReader().read(huge[:100_000]) == (b"big", None, "echo")
    assert HeaderReader().read(huge[:1000]) is None


# -- ChannelRouter ----------------------------------------------------------------------
def test_a_channel_stays_on_the_worker_that_took_its_call():
    router = ChannelRouter(2, heartbeat=1.0)
    for w in router.workers:
        w.ready = True
    kind, first = router.from_client(b"a", ENVELOPE, request(b"c1"), 0.0)
    kind2, second = router.from_client(b"a", ENVELOPE, request(b"c2"), 0.0)
    assert kind == kind2 == FORWARD and first is not second  # the fewest in flight
    for name, args in ((protocol.HEARTBEAT, [0]), (protocol.MORE, [10])):
        assert router.from_client(b"a", ENVELOPE, event(b"c1", name, args), 0.1) == (FORWARD, first)
        assert router.from_client(b"a", ENVELOPE, event(b"c2", name, args), 0.1) == (FORWARD, second)
    # Another client's channel of the same id is another channel.
    assert router.from_client(b"b", ENVELOPE, event(b"c1", protocol.HEARTBEAT, [0]), 0.1) == (DROP, None)
    assert [w.in_flight for w in router.workers] == [1, 1]
    router.from_worker(first, b"a", event(b"c1", protocol.STREAM, 1), 0.2)
    assert first.in_flight == 1
    router.from_worker(first, b"a", event(b"c1", protocol.STREAM_DONE), 0.2)
    router.from_worker(second, b"a", event(b"c2", protocol.ERR, ["E", "m", ""]), 0.2)
    assert [(w.in_flight, w.served) for w in router.workers] == [(0, 1), (0, 1)]
    assert router.from_client(b"a", ENVELOPE, event(b"c1", protocol.HEARTBEAT, [0]), 0.3) == (DROP, None)


def test_new_calls_go_to_the_fewest_in_flight_preferring_connected_workers():
    router = ChannelRouter(3, heartbeat=None)
    w0, w1, w2 = router.workers
    w0.ready = w2.ready = True
    picks = [router.from_client(b"a", ENVELOPE, request(b"%d" % i), 0.0)[1] for i in range(4)]
    assert picks == [w0, w2, w0, w2]  # w1 is not connected yet
    w1.ready = True
    assert [router.from_client(b"a", ENVELOPE, request(b"n%d" % i), 0.0)[1] for i in range(2)] == [w1, w1]
    router.from_worker(w0, b"a", event(b"0", protocol.OK, [1]), 0.0)
    assert router.from_client(b"a", ENVELOPE, request(b"after"), 0.0)[1] is w0  # 1 in flight, the others 2
    assert router.channels == 6


def test_a_dead_workers_callers_are_answered_lost_and_their_events_dropped():
    router = ChannelRouter(2, heartbeat=1.0)
    for w in router.workers:
        w.ready = True
    w0 = router.from_client(b"a", [b"a", b""], request(b"x"), 0.0)[1]
    w1 = router.from_client(b"b", [b"b", b""], request(b"y"), 0.0)[1]
    answers = router.worker_lost(w0, "was killed by SIGKILL")
    assert len(answers) == 1
    envelope, payload = answers[0][:-1], answers[0][-1]
    header, name, args = protocol.decode(payload)
    assert envelope == [b"a", b""] and header["response_to"] == b"x" and name == protocol.ERR
    assert args[0] == "LostRemote" and "killed by SIGKILL" in args[1] and args[2] == ""
    assert (w0.in_flight, w0.ready) == (0, False)
    assert router.from_client(b"a", ENVELOPE, event(b"x", protocol.HEARTBEAT, [0]), 0.1) == (DROP, None)
    assert router.from_client(b"b", ENVELOPE, event(b"y", protocol.HEARTBEAT, [0]), 0.1) == (FORWARD, w1)


def test_silent_channels_are_forgotten_after_three_heartbeats():
    router = ChannelRouter(1, heartbeat=1.0)
    worker = router.workers[0]
    router.from_client(b"a", ENVELOPE, request(b"quiet"), 0.0)
    router.from_client(b"a", ENVELOPE, request(b"alive"), 0.0)
    for t in (1.0, 2.0, 3.0):
        router.from_worker(worker, b"a", event(b"alive", protocol.HEARTBEAT, [0]), t)
    assert router.sweep(2.9) == 0
    assert router.sweep(3.1) == 1 and worker.in_flight == 1  # "quiet" is gone, "alive" stays
    assert router.from_client(b"a", ENVELOPE, event(b"alive", protocol.HEARTBEAT, [0]), 3.2) == (FORWARD, worker)
    assert ChannelRouter(1, heartbeat=None).sweep(1e9) == 0  # without heartbeats only a reply ends one


def test_stopping_refuses_new_calls_itself_and_keeps_open_channels():
    router = ChannelRouter(1, heartbeat=1.0)
    worker = router.workers[0]
    router.from_client(b"a", ENVELOPE, request(b"open"), 0.0)
    router.stop(0.05)
    kind, frames = router.from_client(b"a", ENVELOPE, request(b"late"), 0.1)
    assert kind == SEND and frames[:-1] == ENVELOPE
    header, name, args = protocol.decode(frames[-1])
    assert header["response_to"] == b"late" and name == protocol.ERR
    assert args == ["ServerStopping", "the server is shutting down; retry elsewhere", ""]
    assert router.from_client(b"a", ENVELOPE, event(b"open", protocol.MORE, [5]), 0.2) == (FORWARD, worker)
    assert router.from_client(b"a", ENVELOPE, request(b"s", "_zrpc_status", []), 0.2) == (STATUS, b"s")
    assert router.from_client(b"a", ENVELOPE, b"garbage", 0.2) == (DROP, None)
    # Like a lone server, it keeps refusing while callers still come (bounded), then may close.
    assert router.refusing_for(0.15) > 0 and router.refusing_for(0.1 + router.STOP_QUIET) == 0


def test_unreadable_and_stray_events():
    router = ChannelRouter(2, heartbeat=1.0)
    # Unreadable: a worker answers it (ProtocolError) as a lone server would; nothing is tracked.
    kind, worker = router.from_client(b"a", ENVELOPE, b"\xc1garbage", 0.0)
    assert kind == FORWARD and router.channels == 0
    # A heartbeat outside any channel opens nothing.
    assert router.from_client(b"a", ENVELOPE, request(b"h", protocol.HEARTBEAT, [0]), 0.0) == (DROP, None)
    # A duplicate id follows the first (its worker logs it) and is counted once.
    first = router.from_client(b"a", ENVELOPE, request(b"dup"), 0.0)[1]
    assert router.from_client(b"a", ENVELOPE, request(b"dup"), 0.0) == (FORWARD, first)
    assert first.in_flight == 1
    # A reply from a worker for a channel it does not hold changes nothing.
    other = next(w for w in router.workers if w is not first)
    router.from_worker(other, b"a", event(b"dup", protocol.OK, [1]), 0.0)
    assert first.in_flight == 1 and other.served == 0
    status = router.status()
    assert status["in_flight"] == 1 and [w["worker"] for w in status["workers"]] == [0, 1]
    with pytest.raises(ValueError):
        ChannelRouter(0, heartbeat=1.0)


# -- who is calling, told to the workers ----------------------------------------------------
def test_a_caller_frame_reads_back_as_connection_metadata():
    frame = caller_frame("192.0.2.7", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    caller = ForwardedCaller.of([b"router", b"client", frame, b""])
    assert caller.get("Peer-Address") == "192.0.2.7"
    assert caller.get("User-Id") == "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    assert ForwardedCaller.of([b"router", b"client", caller_frame(None, None), b""]).get("Peer-Address") is None


def test_an_envelope_without_a_caller_frame_names_nobody():
    assert ForwardedCaller.of([b"router", b"client"]) is None
    assert ForwardedCaller.of([b"router", b"client", b"", b""]) is None  # the delimiter, not a caller frame
    # a frame with the prefix but a bad body names nobody rather than raising
    broken = ForwardedCaller.of([b"router", b"client", b"zrpc-caller\0\xc1", b""])
    assert broken.get("Peer-Address") is None and broken.get("User-Id") is None
    odd = ForwardedCaller.of([b"router", b"client", caller_frame(7, ["x"]), b""])  # type: ignore[arg-type]
    assert odd.get("Peer-Address") is None and odd.get("User-Id") is None


# -- a worker that goes silent ---------------------------------------------------------------
def test_a_busy_worker_silent_for_two_intervals_gets_no_new_call_until_it_speaks():
    router = ChannelRouter(2, heartbeat=1.0)
    w0, w1 = router.workers
    for w in router.workers:
        w.ready = True
    assert router.from_client(b"a", ENVELOPE, request(b"x"), 10.0)[1] is w0
    assert router.from_client(b"a", ENVELOPE, request(b"y"), 10.0)[1] is w1
    router.from_worker(w1, b"a", event(b"y", protocol.OK, [1]), 10.5)  # w1 answers, w0 says nothing
    router.sweep(11.9)
    assert not w0.silent and router.probes(11.9) == []  # under two intervals: just a slow call
    router.sweep(12.1)
    assert w0.silent and not w1.silent
    # w0 holds 1 call, w1 none: by count w0 would come second, but it gets nothing at all
    picks = [router.from_client(b"a", ENVELOPE, request(b"n%d" % i), 12.2)[1] for i in range(3)]
    assert picks == [w1, w1, w1]
    # pinged once per interval, on the router's own envelope
    probes = router.probes(12.2)
    assert [w for w, _ in probes] == [w0] and probes[0][1][0] == PROBE_PEER
    assert protocol.decode(probes[0][1][-1])[1] == "_zerorpc_ping"
    assert router.probes(12.9) == [] and len(router.probes(13.3)) == 1
    assert router.status()["workers"][0]["silent"] is True
    # anything from it (its pong, a late reply) brings it back
    router.from_worker(w0, PROBE_PEER, encode(reply_header(b"p", b"ping"), protocol.OK, ["pong"]), 13.4)
    assert not w0.silent
    assert router.from_client(b"a", ENVELOPE, request(b"back"), 13.5)[1] is w0  # 1 in flight against 3


def test_an_idle_worker_is_never_silent_and_its_clock_starts_with_its_first_call():
    router = ChannelRouter(1, heartbeat=1.0)
    worker = router.workers[0]
    worker.ready = True
    router.sweep(100.0)
    assert not worker.silent  # nothing in flight: nothing owed
    router.from_client(b"a", ENVELOPE, request(b"late"), 100.0)
    router.sweep(101.5)
    assert not worker.silent
    router.sweep(102.1)
    assert worker.silent
    # with every worker silent, calls still go somewhere rather than nowhere
    assert router.from_client(b"a", ENVELOPE, request(b"still"), 102.2) == (FORWARD, worker)


def test_a_cancel_reaches_the_worker_and_ends_the_channel_at_once():
    # The worker answers a cancel with nothing: waiting for its reply would keep the channel (and
    # the worker's count) until the idle sweep, or for ever without heartbeats.
    router = ChannelRouter(2, heartbeat=None)
    for w in router.workers:
        w.ready = True
    worker = router.from_client(b"a", ENVELOPE, request(b"c1"), 0.0)[1]
    assert router.from_client(b"a", ENVELOPE, event(b"c1", protocol.CANCEL), 0.1) == (FORWARD, worker)
    assert router.channels == 0 and worker.in_flight == 0 and worker.served == 0
    assert router.from_client(b"a", ENVELOPE, event(b"c1", protocol.HEARTBEAT, [0]), 0.2) == (DROP, None)
    router.from_worker(worker, b"a", event(b"c1", protocol.ERR, ["E", "m", ""]), 0.3)  # a late end
    assert worker.in_flight == 0


def test_a_call_its_worker_cannot_queue_is_answered_server_busy_and_forgotten():
    router = ChannelRouter(1, heartbeat=None)
    worker = router.workers[0]
    worker.ready = True
    payload = request(b"full")
    assert router.from_client(b"a", ENVELOPE, payload, 0.0) == (FORWARD, worker)
    answer = router.undeliverable(b"a", ENVELOPE, payload)
    header, name, args = protocol.decode(answer[-1])
    assert answer[:-1] == ENVELOPE and header["response_to"] == b"full" and name == protocol.ERR
    assert args[0] == "ServerBusy" and router.channels == 0 and worker.in_flight == 0
    # a heartbeat that could not be queued: nothing to answer
    router.from_client(b"a", ENVELOPE, request(b"open"), 0.0)
    assert router.undeliverable(b"a", ENVELOPE, event(b"open", protocol.HEARTBEAT, [0])) is None
    assert router.channels == 1


def test_a_revoked_client_gets_no_status_either():
    router = ChannelRouter(1, heartbeat=None)
    kind, answer = router.from_client(b"a", ENVELOPE, request(b"s", "_zrpc_status", ()), 0.0, lambda: True)
    assert kind == SEND and protocol.decode(answer[-1])[2][0] == "AuthenticationFailed"
    assert router.from_client(b"a", ENVELOPE, request(b"s2", "_zrpc_status", ()), 0.0, lambda: False)[0] == STATUS
