"""One-way events against the real zerorpc 0.6.3, both ways, zerorpc in a separate process.

tests/peers/zerorpc_events.py runs zerorpc's own Publisher, Subscriber,
Pusher or Puller; receiving roles print one JSON line per event (and per
error zerorpc logs), which a greenlet here collects while zrpc sends or
receives in this process. Also: the migration trap of a zerorpc Pusher or
Publisher aimed at a zrpc Server, which must not lose events silently.
"""
import json
import logging
from typing import Any, Dict, Iterator, List

import gevent
import pytest

import zrpc

from conftest import free_tcp_endpoint, wait_until


class Lines:
    """The JSON lines a peer prints, collected in the background."""

    def __init__(self, proc: Any) -> None:
        self.records: List[Dict[str, Any]] = []
        self._reader = gevent.spawn(self._read, proc)

    def _read(self, proc: Any) -> None:
        for line in proc.stdout:
            self.records.append(json.loads(line))

    def events(self, name: str = None) -> List[Dict[str, Any]]:
        return [r for r in self.records if "event" in r and (name is None or r["event"] == name)]

    def errors(self) -> List[str]:
        return [r["error"] for r in self.records if "error" in r]


@pytest.fixture
def listen(peer) -> Iterator[Any]:
    """listen(role, *args) -> Lines of a receiving zerorpc peer; its reader stops before the peer is killed."""
    started: List[Lines] = []

    def _listen(*args: str) -> Lines:
        lines = Lines(peer("zerorpc_events.py", *args))
        started.append(lines)
        return lines

    yield _listen
    for lines in started:
        lines._reader.kill()


@pytest.fixture
def closing() -> Iterator[List[Any]]:
    """Event sockets to close after the test."""
    nodes: List[Any] = []
    yield nodes
    for node in nodes:
        node.close()


# -- zrpc sends, zerorpc receives ----------------------------------------------------
def test_zrpc_publisher_to_zerorpc_subscriber(listen, closing):
    endpoint = free_tcp_endpoint()
    lines = listen("subscribe", "--bind", endpoint)
    publisher = zrpc.Publisher()
    closing.append(publisher)
    publisher.connect(endpoint)
    assert publisher.wait_for_subscribers(1, timeout=10), "zerorpc's subscription never arrived"
    for i in range(20):
        publisher.tick(i, "zrpc", b"\x00\xff")
    publisher.emit("data", {"nested": [1, 2.5, None]})
    assert wait_until(lambda: len(lines.events()) == 21, timeout=10), lines.records
    ticks = lines.events("tick")
    assert [t["args"] for t in ticks] == [[i, "zrpc", {"bytes": "00ff"}] for i in range(20)]
    assert lines.events("data")[0]["args"] == [{"nested": [1, 2.5, None]}]
    assert lines.errors() == []  # the zrpc_seq header key is ignored by zerorpc


def test_keyword_events_to_zerorpc_are_refused_on_its_side(listen, closing):
    """A zerorpc receiver has no _zrpc_kwcall: it logs an error (the documented limit), nothing runs."""
    endpoint = free_tcp_endpoint()
    lines = listen("subscribe", "--bind", endpoint)
    publisher = zrpc.Publisher()
    closing.append(publisher)
    publisher.connect(endpoint)
    assert publisher.wait_for_subscribers(1, timeout=10)
    publisher.tick(1, unit="ms")
    publisher.tick(2)  # a plain one after it, to know the first was processed
    assert wait_until(lambda: lines.events("tick") and lines.errors(), timeout=10), lines.records
    assert [t["args"] for t in lines.events("tick")] == [[2]]
    assert any("_zrpc_kwcall" in e for e in lines.errors()), lines.errors()


def test_zrpc_pusher_to_zerorpc_pullers(listen, closing):
    endpoint = free_tcp_endpoint()
    lines = listen("pull", "--bind", endpoint)
    pusher = zrpc.Pusher(timeout=10)
    closing.append(pusher)
    pusher.connect(endpoint)
    for i in range(50):
        pusher.job(i, {"from": "zrpc"})
    assert wait_until(lambda: len(lines.events("job")) == 50, timeout=10), lines.records
    assert [j["args"] for j in lines.events("job")] == [[i, {"from": "zrpc"}] for i in range(50)]


# -- zerorpc sends, zrpc receives ----------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.ticks: List[Any] = []
        self.jobs: List[Any] = []

    def tick(self, i, origin):
        self.ticks.append([i, origin])

    def job(self, i, meta):
        self.jobs.append([i, meta])


def test_zerorpc_publisher_to_zrpc_subscriber(peer, closing):
    endpoint = free_tcp_endpoint()
    recorder = Recorder()
    subscriber = zrpc.Subscriber(recorder)
    closing.append(subscriber)
    subscriber.bind(endpoint)
    subscriber.start()
    peer("zerorpc_events.py", "publish", "--connect", endpoint, "--interval", "0.01")
    assert wait_until(lambda: len(recorder.ticks) >= 20, timeout=15)
    first = recorder.ticks[0][0]
    # One zerorpc publisher, in order; it sends no sequence numbers, so nothing counts as dropped.
    assert recorder.ticks[:20] == [[first + k, "zerorpc"] for k in range(20)]
    assert subscriber.dropped == 0 and subscriber.invalid == 0 and subscriber.unknown == 0


def test_zerorpc_publisher_with_a_name_filter(peer, closing):
    endpoint = free_tcp_endpoint()
    recorder = Recorder()
    subscriber = zrpc.Subscriber(recorder, names=["job"])
    closing.append(subscriber)
    subscriber.bind(endpoint)
    subscriber.start()
    peer("zerorpc_events.py", "publish", "--connect", endpoint, "--interval", "0.01")
    assert wait_until(lambda: subscriber.skipped >= 10, timeout=15)
    assert recorder.ticks == [] and subscriber.received == 0


def test_zerorpc_pusher_to_zrpc_puller(peer, closing):
    endpoint = free_tcp_endpoint()
    recorder = Recorder()
    puller = zrpc.Puller(recorder, pool_size=1)  # one at a time: in order
    closing.append(puller)
    puller.bind(endpoint)
    puller.start()
    peer("zerorpc_events.py", "push", "--connect", endpoint, "--count", "100")
    assert wait_until(lambda: len(recorder.jobs) == 100, timeout=15)
    assert recorder.jobs == [[i, {"from": "zerorpc"}] for i in range(100)]


# -- the migration trap: zerorpc Pusher/Publisher aimed at a zrpc Server -----------------
@pytest.mark.parametrize("role", ["push", "publish"])
def test_zerorpc_sender_aimed_at_a_zrpc_server_is_reported(role, peer, serve, caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    endpoint = serve({"job": lambda *a: None, "tick": lambda *a: None}, free_tcp_endpoint())
    peer("zerorpc_events.py", role, "--connect", endpoint)

    def warned() -> List[str]:
        return [r.getMessage() for r in caplog.records if "handshake" in r.getMessage()]

    assert wait_until(lambda: warned(), timeout=10), "the server said nothing about the refused peer"
    message = warned()[0]
    assert endpoint in message and "zerorpc Pusher or Publisher" in message and "zrpc.Puller" in message
    assert serve.servers[-1].calls_in_flight == 0  # and nothing was run


def test_zrpc_clients_do_not_trigger_the_trap_warning(serve, client_factory, caplog):
    caplog.set_level(logging.WARNING, logger="zrpc")
    endpoint = serve({"add": lambda a, b: a + b})
    for _ in range(5):
        client = client_factory(endpoint, timeout=10)
        assert client.add(1, 2) == 3
        client.close()
    gevent.sleep(0.2)  # let the monitor see the disconnects (a warning would come at once)
    assert [r for r in caplog.records if "handshake" in r.getMessage()] == []


# -- the command line against zerorpc --------------------------------------------------
def test_cli_subscribe_to_a_zerorpc_publisher_and_push_to_a_zerorpc_puller(peer, listen):
    from test_events import cli, finish

    endpoint = free_tcp_endpoint()
    proc = cli("subscribe", "--bind", endpoint, "--count", "3", "--timeout", "20")
    # No wait for the CLI to bind: a zerorpc publisher connecting early just retries.
    peer("zerorpc_events.py", "publish", "--connect", endpoint, "--interval", "0.01")
    status, out, err = finish(proc)
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    first = records[0]["args"][0]
    assert records == [{"event": "tick", "args": [first + k, "zerorpc"], "kwargs": {}} for k in range(3)]

    pull_endpoint = free_tcp_endpoint()
    lines = listen("pull", "--bind", pull_endpoint)
    status, out, err = finish(cli("push", "-j", pull_endpoint, "job", "7", '{"from": "cli"}'))
    assert status == 0, err
    assert wait_until(lambda: lines.events("job"), timeout=10)
    assert lines.events("job")[0]["args"] == [7, {"from": "cli"}]
