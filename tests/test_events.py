"""One-way events: the I/O-free core (zrpc.core.events) with plain bytes, then zrpc on both sides over tcp and ipc."""
import logging
import tempfile
import time
from typing import Any, Iterator, List

import gevent
import msgpack
import pytest
import zmq
from gevent.event import Event

import zrpc
from zrpc.core import protocol
from zrpc.core.events import (SEQUENCE, EventDispatcher, EventEncoder, GapCounter, IncompleteHandshakes)

from conftest import wait_until


def unpack(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False)


# -- the core, without sockets -----------------------------------------------------
def test_a_plain_event_is_zerorpcs_frame():
    header, name, args = unpack(EventEncoder().encode("tick", (1, "a")))
    assert name == "tick" and args == [1, "a"]
    assert set(header) == {"message_id", "v"} and header["v"] == 3 and isinstance(header["message_id"], bytes)


def test_keyword_arguments_travel_as_a_kwcall():
    header, name, args = unpack(EventEncoder().encode("tick", (1,), {"unit": "ms"}))
    assert name == protocol.KWCALL and args == ["tick", [1], {"unit": "ms"}]


def test_a_publisher_numbers_its_events_and_a_refused_value_leaves_no_gap():
    encoder = EventEncoder(sequenced=True)
    first = unpack(encoder.encode("a"))[0][SEQUENCE]
    with pytest.raises(TypeError):
        encoder.encode("a", (object(),))
    second = unpack(encoder.encode("a"))[0][SEQUENCE]
    assert first[0] == second[0] and len(first[0]) == 8
    assert (first[1], second[1]) == (0, 1) and encoder.sent == 2
    with pytest.raises(TypeError):
        encoder.encode(b"bytes-name")


class Handlers:
    def __init__(self):
        self.seen = []

    def tick(self, n, unit="s"):
        self.seen.append(("tick", n, unit))

    def job(self, *args):
        self.seen.append(("job",) + args)

    def _private(self):
        raise AssertionError("never exposed")


def test_the_dispatcher_resolves_plain_and_keyword_events():
    handlers = Handlers()
    dispatcher = EventDispatcher(handlers)
    encoder = EventEncoder()
    for payload in (encoder.encode("tick", (1,)), encoder.encode("tick", (2,), {"unit": "ms"})):
        delivery = dispatcher.receive(payload, 0.0)
        delivery.func(*delivery.args, **delivery.kwargs)
    assert handlers.seen == [("tick", 1, "s"), ("tick", 2, "ms")]
    assert dispatcher.received == 2


def test_unknown_names_private_names_and_builtins_run_nothing_and_are_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    dispatcher = EventDispatcher(Handlers())
    encoder = EventEncoder()
    for name in ("nope", "nope", "_private", "_zerorpc_ping"):
        assert dispatcher.receive(encoder.encode(name), 0.0) is None
    assert dispatcher.unknown == 4 and dispatcher.received == 0
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3 and sum("nope" in m for m in logged) == 1


def test_a_name_filter_skips_other_events_and_must_name_real_methods():
    dispatcher = EventDispatcher(Handlers(), names=["job"])
    encoder = EventEncoder()
    assert dispatcher.receive(encoder.encode("tick", (1,)), 0.0) is None
    assert dispatcher.receive(encoder.encode("tick", (1,), {"unit": "h"}), 0.0) is None  # kwcalls too
    assert dispatcher.receive(encoder.encode("job", (1,)), 0.0).name == "job"
    assert (dispatcher.skipped, dispatcher.received) == (2, 1)
    with pytest.raises(ValueError, match="nope"):
        EventDispatcher(Handlers(), names=["job", "nope"])


def test_a_fallback_takes_every_event_without_a_method_of_its_own():
    got = []
    dispatcher = EventDispatcher(Handlers(), names=["job", "other"], fallback=lambda *e: got.append(e))
    encoder = EventEncoder()
    for payload in (encoder.encode("other", (1,)), encoder.encode("other", (2,), {"k": 3}),
                    encoder.encode("job", (4,)), encoder.encode("tick", (5,))):
        delivery = dispatcher.receive(payload, 0.0)
        if delivery is not None:
            delivery.func(*delivery.args, **delivery.kwargs)
    assert got == [("other", [1], {}), ("other", [2], {"k": 3})]  # job has its method; tick is filtered
    assert (dispatcher.received, dispatcher.skipped, dispatcher.unknown) == (3, 1, 0)


def test_bad_frames_and_bad_kwcalls_are_counted_not_run(caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    dispatcher = EventDispatcher(Handlers())
    bad = [b"\xc1", msgpack.packb([{"v": 3}, "tick", []]),
           protocol.encode(protocol.new_header(b"x"), protocol.KWCALL, ["tick", "notalist", {}])]
    for payload in bad:
        assert dispatcher.receive(payload, 0.0) is None
    assert dispatcher.invalid == 3
    assert len(caplog.records) == 3


def test_a_malformed_kwcall_is_invalid_even_behind_a_name_filter():
    dispatcher = EventDispatcher(Handlers(), names=["job"])
    payload = protocol.encode(protocol.new_header(b"x"), protocol.KWCALL, [["unhashable"], [], {}])
    assert dispatcher.receive(payload, 0.0) is None
    assert (dispatcher.skipped, dispatcher.invalid) == (1, 0)  # filtered out before anything else


def test_the_events_core_imports_neither_gevent_nor_zmq():
    from conftest import run_python

    code = ("import sys, zrpc.core.events\n"
            "assert 'gevent' not in sys.modules and 'zmq' not in sys.modules, sorted(sys.modules)\n")
    out = run_python(code)
    assert out.returncode == 0, out.stderr


def test_gaps_are_counted_per_publisher_and_logged_at_most_every_interval():
    gaps = GapCounter(log_interval=10.0)
    assert gaps.observe([b"A", 5], 0.0) is None  # baseline: a late subscriber missed nothing
    assert gaps.observe([b"A", 6], 0.0) is None
    first = gaps.observe([b"A", 10], 1.0)
    assert first is not None and "missed 3 event(s)" in first and "high-water mark" in first
    assert gaps.observe([b"B", 100], 1.0) is None  # another publisher: its own baseline
    assert gaps.observe([b"A", 12], 2.0) is None  # within the interval: counted, not logged
    later = gaps.observe([b"A", 20], 12.0)
    assert later is not None and "missed 8 event(s)" in later and "total 11" in later
    assert gaps.dropped == 11
    assert gaps.observe([b"A", 3], 13.0) is None and gaps.dropped == 11  # backwards: a new baseline
    for junk in ("x", [b"A"], [b"A", "1"], [1, 2], None):
        assert gaps.observe(junk, 14.0) is None
    assert gaps.dropped == 11


def test_gap_counter_forgets_the_least_recent_publisher_beyond_its_bound():
    gaps = GapCounter(max_sources=2)
    gaps.observe([b"A", 0], 0.0)
    gaps.observe([b"B", 0], 0.0)
    gaps.observe([b"C", 0], 0.0)  # A forgotten
    assert gaps.observe([b"A", 50], 0.0) is None and gaps.dropped == 0
    gaps.observe([b"C", 2], 0.0)
    assert gaps.dropped == 1


ACCEPTED, DISCONNECTED, SUCCEEDED, NO_DETAIL = 32, 512, 4096, 2048


def test_incomplete_handshakes_warn_once_per_endpoint_then_every_interval():
    watch = IncompleteHandshakes((ACCEPTED,), DISCONNECTED, (SUCCEEDED,), interval=60.0)
    ep = "tcp://127.0.0.1:4242"
    # A good client: accepted, handshake, gone later. No warning.
    assert watch.observe(ACCEPTED, 10, ep, 0.0) is None
    assert watch.observe(SUCCEEDED, 0, ep, 0.0) is None
    assert watch.observe(DISCONNECTED, 10, ep, 1.0) is None
    # A PUSH peer: accepted, (maybe NO_DETAIL), disconnected.
    assert watch.observe(ACCEPTED, 11, ep, 2.0) is None
    assert watch.observe(NO_DETAIL, 32, ep, 2.0) is None
    warning = watch.observe(DISCONNECTED, 11, ep, 2.0)
    assert warning and ep in warning and "zerorpc Pusher or Publisher" in warning
    for fd in (12, 13):  # two more within the minute: counted only
        watch.observe(ACCEPTED, fd, ep, 3.0)
        assert watch.observe(DISCONNECTED, fd, ep, 3.0) is None
    watch.observe(ACCEPTED, 14, ep, 70.0)
    later = watch.observe(DISCONNECTED, 14, ep, 70.0)
    assert later and "3 connections" in later and watch.incomplete == 4


# -- zrpc on both sides, real sockets ----------------------------------------------
@pytest.fixture
def nodes() -> Iterator[List[Any]]:
    made: List[Any] = []
    yield made
    for node in made:
        node.close()


def make(nodes: List[Any], node: Any) -> Any:
    nodes.append(node)
    return node


def test_every_subscriber_gets_every_event_with_keyword_arguments(bind_endpoint, nodes):
    publisher = make(nodes, zrpc.Publisher())
    endpoint = publisher.bind(bind_endpoint)
    subscribers = []
    for _ in range(2):
        handlers = Handlers()
        subscriber = make(nodes, zrpc.Subscriber(handlers))
        subscriber.connect(endpoint)
        subscriber.start()
        subscribers.append((subscriber, handlers))
    assert publisher.wait_for_subscribers(2, timeout=10)
    for i in range(50):
        publisher.tick(i, unit="ms")
    publisher.emit("job", b"\x00", [1, 2])
    for subscriber, handlers in subscribers:
        assert wait_until(lambda: len(handlers.seen) == 51, timeout=10)
        assert sorted(handlers.seen[:50]) == [("tick", i, "ms") for i in range(50)]
        assert handlers.seen[50] == ("job", b"\x00", [1, 2])
        assert subscriber.dropped == 0 and subscriber.received == 51
    assert publisher.sent == 51
    assert publisher.subscriptions == 2
    subscribers[0][0].close()
    assert wait_until(lambda: publisher.subscriptions == 1, timeout=10)  # a subscriber gone is counted out


def test_each_pushed_event_goes_to_exactly_one_puller(bind_endpoint, nodes):
    pusher = make(nodes, zrpc.Pusher(timeout=10))
    endpoint = pusher.bind(bind_endpoint)
    pullers = []
    for _ in range(2):
        handlers = Handlers()
        puller = make(nodes, zrpc.Puller(handlers))
        puller.connect(endpoint)
        puller.start()
        pullers.append((puller, handlers))
    assert wait_until(lambda: pusher._transport.socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT, timeout=10)
    gevent.sleep(0.2)  # both pullers' connections up (round robin covers live ones only)
    for i in range(200):
        pusher.job(i)
    assert wait_until(lambda: sum(len(h.seen) for _, h in pullers) == 200, timeout=10)
    got = sorted(item for _, h in pullers for item in h.seen)
    assert got == [("job", i) for i in range(200)]  # none twice, none lost
    assert all(h.seen for _, h in pullers)  # and both took a share


def test_a_subscriber_listening_to_some_names(bind_endpoint, nodes):
    handlers = Handlers()
    subscriber = make(nodes, zrpc.Subscriber(handlers, names=["job"]))
    endpoint = subscriber.bind(bind_endpoint)
    subscriber.start()
    publisher = make(nodes, zrpc.Publisher())
    publisher.connect(endpoint)
    assert publisher.wait_for_subscribers(1, timeout=10)
    for i in range(10):
        publisher.tick(i)
        publisher.job(i)
    assert wait_until(lambda: len(handlers.seen) == 10 and subscriber.skipped == 10, timeout=10)
    assert handlers.seen == [("job", i) for i in range(10)]


def test_pool_size_bounds_the_handlers_running_at_once(bind_endpoint, nodes):
    release = Event()
    running, peak, done = [0], [0], []

    def work(i):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        release.wait(10)
        running[0] -= 1
        done.append(i)

    puller = make(nodes, zrpc.Puller({"work": work}, pool_size=3))
    endpoint = puller.bind(bind_endpoint)
    puller.start()
    pusher = make(nodes, zrpc.Pusher(timeout=10))
    pusher.connect(endpoint)
    for i in range(20):
        pusher.work(i)
    assert wait_until(lambda: puller.running == 3, timeout=10)
    gevent.sleep(0.1)  # had the bound leaked, more would be running by now
    assert peak[0] == 3 and not done
    release.set()
    assert wait_until(lambda: len(done) == 20, timeout=10)
    assert peak[0] == 3 and sorted(done) == list(range(20))


def test_a_slow_subscriber_loses_events_at_the_high_water_mark_and_counts_them(bind_endpoint, nodes, caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    release = Event()
    seen: List[int] = []

    def tick(i, padding=b""):
        seen.append(i)
        release.wait(10)

    small = {zmq.SNDHWM: 10, zmq.RCVHWM: 10, zmq.SNDBUF: 4096, zmq.RCVBUF: 4096}
    subscriber = make(nodes, zrpc.Subscriber({"tick": tick}, pool_size=1, socket_options=small))
    endpoint = subscriber.bind(bind_endpoint)
    subscriber.start()
    publisher = make(nodes, zrpc.Publisher(socket_options=small))
    publisher.connect(endpoint)
    assert publisher.wait_for_subscribers(1, timeout=10)
    publisher.tick(0)
    assert wait_until(lambda: seen == [0], timeout=10)  # the handler now holds the only slot
    for i in range(1, 5001):  # PUB never blocks: beyond the queues, these are dropped
        publisher.tick(i, b"x" * 100)
    release.set()
    # Drops show up when a later event arrives: publish slowly until the last one is in.
    last = 5000
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last += 1
        publisher.tick(last)
        if wait_until(lambda: seen[-1] == last, timeout=0.05):
            break
    assert seen[-1] == last
    assert subscriber.dropped > 0
    assert subscriber.received + subscriber.dropped == last + 1  # every number accounted for
    warnings = [r.getMessage() for r in caplog.records if "missed" in r.getMessage()]
    assert len(warnings) == 1 and "high-water mark" in warnings[0]


def test_a_pusher_with_no_puller_raises_after_its_timeout_and_sends_nothing(nodes):
    with tempfile.TemporaryDirectory(prefix="zrpc-") as tmp:
        endpoint = f"ipc://{tmp}/pull"
        pusher = make(nodes, zrpc.Pusher(timeout=0.3))
        pusher.connect(endpoint)
        started = time.monotonic()
        with pytest.raises(zrpc.TimeoutExpired, match="no puller"):
            pusher.job("lost")
        assert 0.25 <= time.monotonic() - started < 3
        handlers = Handlers()
        puller = make(nodes, zrpc.Puller(handlers))
        puller.bind(endpoint)
        puller.start()
        pusher.timeout = 10
        pusher.job("kept")
        assert wait_until(lambda: handlers.seen, timeout=10)
        gevent.sleep(0.1)
        assert handlers.seen == [("job", "kept")]  # the timed-out event was never queued
    with pytest.raises(ValueError):
        zrpc.Pusher(timeout=None)


def test_a_failing_handler_is_logged_and_the_receiver_goes_on(bind_endpoint, nodes, caplog):
    caplog.set_level(logging.ERROR, logger="zrpc")
    seen = []

    def job(i):
        if i == 0:
            raise ValueError("boom")
        seen.append(i)

    puller = make(nodes, zrpc.Puller({"job": job}))
    endpoint = puller.bind(bind_endpoint)
    puller.start()
    pusher = make(nodes, zrpc.Pusher(timeout=10))
    pusher.connect(endpoint)
    pusher.job(0)
    pusher.job(1)
    assert wait_until(lambda: seen == [1], timeout=10)
    assert any("job() raised" in r.getMessage() and r.exc_info for r in caplog.records)


def test_run_returns_on_stop_and_with_blocks_close(bind_endpoint):
    class Handler(zrpc.Subscriber):  # subclass style, like zrpc.Server
        def __init__(self):
            super().__init__()
            self.got = []

        def ping(self, x):
            self.got.append(x)

    with Handler() as subscriber, zrpc.Publisher() as publisher:
        endpoint = subscriber.bind(bind_endpoint)
        runner = gevent.spawn(subscriber.run)
        publisher.connect(endpoint)
        assert publisher.wait_for_subscribers(1, timeout=10)
        publisher.ping(1)
        assert wait_until(lambda: subscriber.got == [1], timeout=10)
        subscriber.stop(1)
        runner.join(5)
        assert runner.successful()
    assert subscriber.closed and publisher.closed
    with pytest.raises(zrpc.ClosedError):
        publisher.ping(2)
    with pytest.raises(RuntimeError):
        subscriber.start()


def test_stop_waits_for_running_handlers_then_kills_them(bind_endpoint, nodes):
    finished, killed = [], []

    def work(seconds):
        try:
            gevent.sleep(seconds)
            finished.append(seconds)
        except gevent.GreenletExit:
            killed.append(seconds)
            raise

    puller = make(nodes, zrpc.Puller({"work": work}))
    endpoint = puller.bind(bind_endpoint)
    puller.start()
    pusher = make(nodes, zrpc.Pusher(timeout=10))
    pusher.connect(endpoint)
    pusher.work(0.1)
    pusher.work(30)
    assert wait_until(lambda: puller.running == 2, timeout=10)
    started = time.monotonic()
    puller.stop(1.0)
    assert time.monotonic() - started < 5
    assert finished == [0.1] and killed == [30]


def test_trace_sees_events_on_both_sides(bind_endpoint, nodes):
    sent, received = [], []
    puller = make(nodes, zrpc.Puller(Handlers(), trace=lambda d, h, n, a: received.append((d, n, a))))
    endpoint = puller.bind(bind_endpoint)
    puller.start()
    pusher = make(nodes, zrpc.Pusher(timeout=10, trace=lambda d, h, n, a: sent.append((d, n, a))))
    pusher.connect(endpoint)
    pusher.job(1, k=2)
    assert wait_until(lambda: received, timeout=10)
    assert sent == [("send", protocol.KWCALL, ["job", [1], {"k": 2}])]
    assert received == [("recv", protocol.KWCALL, ["job", [1], {"k": 2}])]


def test_a_raw_push_socket_aimed_at_a_zrpc_server_is_reported(serve, caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    endpoint = serve({"job": lambda: None})
    context = zmq.Context()
    try:
        push = context.socket(zmq.PUSH)
        push.linger = 0
        push.connect(endpoint)
        push.send(b"never delivered", zmq.NOBLOCK)
        assert wait_until(lambda: any("handshake" in r.getMessage() for r in caplog.records), timeout=10)
        push.close()
    finally:
        context.term()


# -- the command line: zrpc subscribe / publish / push (separate processes) ------------------
def cli(*args: str) -> Any:
    """Start ``python -m zrpc ARGS`` (gevent's Popen: this process's nodes keep running)."""
    import os
    import sys

    from gevent import subprocess

    from conftest import ROOT

    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PYTHONPATH", None)
    return subprocess.Popen([sys.executable, "-m", "zrpc", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", cwd=ROOT, env=env)


def finish(proc: Any, limit: float = 30) -> Any:
    out, err = proc.communicate(timeout=limit)
    return proc.returncode, out, err


def test_cli_subscribe_prints_each_event_as_a_json_line(nodes):
    import json

    publisher = make(nodes, zrpc.Publisher())
    endpoint = publisher.bind("tcp://127.0.0.1:*")
    proc = cli("subscribe", endpoint, "tick", "job", "--count", "3", "--timeout", "20")
    assert publisher.wait_for_subscribers(1, timeout=20)
    publisher.other("not printed")
    publisher.tick(1, b"\xff", unit="ms")
    publisher.job({"k": [1, None]})
    publisher.tick(2)
    status, out, err = finish(proc)
    assert status == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"event": "tick", "args": [1, "b'\\xff'"], "kwargs": {"unit": "ms"}},
        {"event": "job", "args": [{"k": [1, None]}], "kwargs": {}},
        {"event": "tick", "args": [2], "kwargs": {}},
    ]


def test_cli_publish_and_push_send_one_event(nodes):
    got = []
    subscriber = make(nodes, zrpc.Subscriber({"price": lambda *a, **k: got.append(("sub", a, k))}))
    sub_endpoint = subscriber.bind("tcp://127.0.0.1:*")
    subscriber.start()
    puller = make(nodes, zrpc.Puller({"job": lambda *a, **k: got.append(("pull", a, k))}))
    pull_endpoint = puller.bind("tcp://127.0.0.1:*")
    puller.start()
    status, out, err = finish(cli("publish", sub_endpoint, "price", "EUR", "-k", "rate=1.08"))
    assert (status, out) == (0, ""), err
    status, out, err = finish(cli("push", "-j", pull_endpoint, "job", "[640, 480]", "1"))
    assert (status, out) == (0, ""), err
    assert wait_until(lambda: len(got) == 2, timeout=10)
    assert sorted(got) == [("pull", ([640, 480], 1), {}), ("sub", ("EUR",), {"rate": "1.08"})]


def test_cli_senders_with_nobody_listening_fail_with_status_3():
    with tempfile.TemporaryDirectory(prefix="zrpc-") as tmp:
        endpoint = f"ipc://{tmp}/nobody"
        status, out, err = finish(cli("push", "-t", "0.3", endpoint, "job"))
        assert status == 3 and out == "" and "no puller" in err and "nothing was pushed" in err
        status, out, err = finish(cli("publish", "-t", "0.3", endpoint, "job"))
        assert status == 3 and "no subscriber within 0.3s" in err
        status, out, err = finish(cli("subscribe", "-t", "0.3", endpoint))
        assert status == 3 and "no event within 0.3s" in err


def test_cli_event_usage_errors():
    for args, fragment in ((("push",), "usage"), (("push", "job"), "no endpoint"),
                           (("publish", "tcp://127.0.0.1:1"), "no METHOD"),
                           (("subscribe", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"), "looks like an endpoint"),
                           (("push", "-j", "tcp://127.0.0.1:1", "job", "nojson"), "not valid JSON")):
        status, out, err = finish(cli(*args))
        assert status == 2 and fragment in err, (args, err)


def test_a_zrpc_pusher_aimed_at_a_zrpc_server_times_out_and_the_server_says_why(serve, nodes, caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    endpoint = serve({"job": lambda: None})
    pusher = make(nodes, zrpc.Pusher(timeout=0.5))
    pusher.connect(endpoint)
    with pytest.raises(zrpc.TimeoutExpired, match="no puller"):  # ZMQ_IMMEDIATE: no handshake, no queue
        pusher.job()
    assert wait_until(lambda: any("handshake" in r.getMessage() for r in caplog.records), timeout=10)
