"""Wire compatibility with the real zerorpc 0.6.3, in both directions, over real sockets.

zerorpc always runs in a separate process (tests/peers/zerorpc_*.py): it has
its own gevent zmq wrapper and a global context that must stay out of this
process. Its side of each check is done by zerorpc's own code:

* zerorpc client -> zrpc server: ``zerorpc_client.py`` runs a scenario and
  prints one JSON line per check; this process serves and asserts.
* zrpc client -> zerorpc server: ``zerorpc_server.py`` serves; this process
  calls and asserts. The peer also records every event it receives, so the
  test can see what zrpc put on the wire.

Heartbeats are 1 s on both sides so that "longer than two intervals" and
"lost after two intervals" fit in a few seconds.
"""
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import gevent
import gevent.subprocess
import pytest

import zrpc

from conftest import PEERS, ROOT, free_tcp_endpoint, wait_until

HB = 1.0  # heartbeat interval (s) of both sides in every test here


# -- the zrpc service that zerorpc clients call ------------------------------------
class Service:
    def __init__(self):
        self.cancelled = []  # when slow() calls were stopped by the server (time.monotonic())
        self.endless_stopped_at = None

    def add(self, a, b):
        """Add two numbers."""
        return a + b

    def echo(self, x):
        return x

    def greet(self, name, greeting="hello"):
        """Greet someone.

        The greeting defaults to hello.
        """
        return "%s %s" % (greeting, name)

    def boom(self):
        raise ValueError("boom from zrpc")

    def slow(self, seconds):
        try:
            gevent.sleep(seconds)
        except gevent.GreenletExit:  # the server cancelled the call
            self.cancelled.append(time.monotonic())
            raise
        return "slept %s" % seconds

    @zrpc.stream
    def count(self, n):
        return iter(range(n))

    @zrpc.stream
    def count_then_fail(self, n):
        for i in range(n):
            yield i
        raise ValueError("stream broke after %d items" % n)

    @zrpc.stream
    def endless(self):
        n = 0
        try:
            while True:
                yield n
                n += 1
        finally:
            self.endless_stopped_at = time.monotonic()

    def search(self, first, *, last="", limit=10):
        """zrpc-only: keyword-only parameters (shown in the `signature` key)."""
        return [first, last, limit]


# -- helpers -------------------------------------------------------------------
_client_procs: List[gevent.subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap_zerorpc_clients() -> Iterator[None]:
    """Kill any zerorpc client process a failed test left running."""
    yield
    while _client_procs:
        proc = _client_procs.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def start_zerorpc_client(endpoint: str, scenario: str, *args: Any, passive: bool = False,
                         call_timeout: float = 10) -> gevent.subprocess.Popen:
    """Start a zerorpc.Client scenario in another process (gevent's Popen: our hub keeps serving)."""
    cmd = [sys.executable, os.path.join(PEERS, "zerorpc_client.py"), endpoint, scenario,
           *map(str, args), "--heartbeat", str(HB), "--timeout", str(call_timeout)]
    if passive:
        cmd.append("--passive")
    proc = gevent.subprocess.Popen(cmd, stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE,
                                   text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    _client_procs.append(proc)
    return proc


def finish_zerorpc_client(proc: gevent.subprocess.Popen, limit: float = 45) -> Dict[str, Dict[str, Any]]:
    """Wait (bounded by ``limit``) for a scenario to end; return its checks by name."""
    try:
        out, err = proc.communicate(timeout=limit)
    except gevent.subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        _client_procs.remove(proc)
        pytest.fail(f"zerorpc client still running after {limit}s:\n{out}\n{err}")
    _client_procs.remove(proc)
    assert proc.returncode == 0, f"zerorpc client failed ({proc.returncode}):\n{out}\n{err}"
    checks = {}
    for line in out.splitlines():
        record = json.loads(line)
        checks[record["check"]] = record
    return checks


def run_zerorpc_client(endpoint: str, scenario: str, *args: Any, **options: Any) -> Dict[str, Dict[str, Any]]:
    """Run a zerorpc.Client scenario in another process to its end; return its checks by name."""
    return finish_zerorpc_client(start_zerorpc_client(endpoint, scenario, *args, **options))


def value_of(record: Dict[str, Any]) -> Any:
    """The value of a check that must have succeeded (else fail with the remote error)."""
    assert "error" not in record, f"check {record['check']} failed: {record['error']}"
    return record["value"]


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="zrpc-interop-") as tmp:  # short: ipc paths are limited
        yield tmp


@pytest.fixture
def zrpc_server(serve):
    """zrpc_server(endpoint="tcp://127.0.0.1:*") -> endpoint of a zrpc Service with HB heartbeats."""
    def _start(endpoint: str = "tcp://127.0.0.1:*", service: Optional[Service] = None) -> str:
        return serve(service or Service(), endpoint, name="zrpc_service", heartbeat=HB)
    return _start


@pytest.fixture
def zerorpc_server(peer, tmp_path):
    """zerorpc_server(endpoint=None, shim=False) -> (endpoint, Popen) of a real zerorpc server process."""
    def _start(endpoint: Optional[str] = None, shim: bool = False):
        endpoint = endpoint or free_tcp_endpoint()
        args = [endpoint, "--heartbeat", str(HB), "--log", str(tmp_path / "zerorpc_server.log")]
        if shim:
            args.append("--getargspec-shim")
        return endpoint, peer("zerorpc_server.py", *args)
    return _start


# ==============================================================================
# 1. zerorpc client -> zrpc server
# ==============================================================================
def test_zerorpc_client_plain_calls(zrpc_server, transport, ipc_dir):
    endpoint = zrpc_server("tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{ipc_dir}/s")
    checks = run_zerorpc_client(endpoint, "basic")
    assert value_of(checks["add"]) == 30
    assert value_of(checks["echo_str"]) == "héllo ✓"
    assert value_of(checks["echo_bytes"]) == {"bytes": "00ff"}  # bin stays bin
    assert value_of(checks["echo_nested"]) == {"l": [1, 2.5, None, True, False], "n": -(2 ** 40), "s": "x"}
    assert value_of(checks["greet_default"]) == "hello bob"
    assert value_of(checks["greet"]) == "hi bob"
    assert value_of(checks["echo_big"]) is True  # 5 MB each way


def test_zerorpc_client_200_concurrent_calls(zrpc_server):
    checks = run_zerorpc_client(zrpc_server(), "concurrent", 200)
    assert value_of(checks["concurrent"]) == [2 * i for i in range(200)]


def test_zerorpc_client_sees_errors_as_remote_errors(zrpc_server):
    checks = run_zerorpc_client(zrpc_server(), "errors")
    boom = checks["boom"]["error"]
    assert boom["type"] == "RemoteError"
    assert (boom["name"], boom["msg"]) == ("ValueError", "boom from zrpc")
    assert "Traceback (most recent call last)" in boom["traceback"]
    assert "ValueError: boom from zrpc" in boom["traceback"]
    unknown = checks["unknown"]["error"]
    assert (unknown["type"], unknown["name"], unknown["msg"]) == ("RemoteError", "NameError", "no_such_method")
    arity = checks["bad_arity"]["error"]
    assert arity["name"] == "TypeError" and "b" in arity["msg"]
    assert value_of(checks["after_errors"]) == 2


def test_zerorpc_client_builtins_and_inspect(zrpc_server):
    checks = run_zerorpc_client(zrpc_server(), "builtins")
    public = ["add", "boom", "count", "count_then_fail", "echo", "endless", "greet", "search", "slow"]
    assert value_of(checks["ping"]) == ["pong", "zrpc_service"]
    assert sorted(value_of(checks["list"])) == public
    assert value_of(checks["name"]) == "zrpc_service"
    assert value_of(checks["help"]) == "Greet someone.\n\nThe greeting defaults to hello."
    # getargspec layout [args, varargs, keywords, defaults], without the bound `self`.
    assert value_of(checks["args"]) == [["name", "greeting"], None, None, ["hello"]]

    inspected = value_of(checks["inspect"])
    assert inspected["name"] == "zrpc_service"
    assert sorted(inspected["methods"]) == public
    greet = inspected["methods"]["greet"]
    assert greet["args"] == [{"name": "name"}, {"name": "greeting", "default": "hello"}]
    assert greet["doc"] == "Greet someone.\n\nThe greeting defaults to hello."
    assert inspected["methods"]["echo"]["args"] == [{"name": "x"}] and inspected["methods"]["echo"]["doc"] is None
    # zrpc's extra keys ride along; zerorpc's CLI ignores them.
    assert greet["signature"] == "(name, greeting='hello')" and greet["stream"] is False
    assert inspected["methods"]["count"]["stream"] is True
    assert inspected["methods"]["search"]["signature"] == "(first, *, last='', limit=10)"

    # zerorpc's own CLI code (zerorpc --inspect) formats it.
    cli = value_of(checks["cli_inspect"])
    assert cli["service"] == "zrpc_service"
    assert ["greet(name, greeting=hello)", "Greet someone.\n\nThe greeting defaults to hello."] in cli["methods"]
    assert ["add(a, b)", "Add two numbers."] in cli["methods"]


def test_zerorpc_client_reads_a_long_stream_with_credit(zrpc_server):
    # 1000 items through zerorpc's 100-slot window; the reader pauses after
    # items 1 and 150, so a server ignoring _zpc_more credit would overflow it.
    checks = run_zerorpc_client(zrpc_server(), "stream", 1000, 1, 150)
    assert value_of(checks["stream"]) == list(range(1000))
    assert value_of(checks["empty_stream"]) == []
    assert value_of(checks["after_stream"]) == 4


def test_zerorpc_client_sees_a_mid_stream_error_after_the_items(zrpc_server):
    record = run_zerorpc_client(zrpc_server(), "stream_error", 5)["stream_error"]
    assert record["items"] == [0, 1, 2, 3, 4]
    error = record["error"]
    assert (error["type"], error["name"], error["msg"]) == ("RemoteError", "ValueError", "stream broke after 5 items")


def test_zerorpc_client_calls_longer_than_two_heartbeats(zrpc_server):
    # Ten 3.5 s calls at once: neither side may declare the other lost on any of them.
    checks = run_zerorpc_client(zrpc_server(), "slow", 3.5, 10)
    assert len(checks) == 10
    for record in checks.values():
        assert value_of(record) == "slept 3.5"
        assert 3.5 <= record["elapsed"] < 8


def test_passive_zerorpc_client_calls_longer_than_two_heartbeats(zrpc_server):
    # zerorpc's CLI default: the client heartbeats only once it has heard the server's
    # first ping, so the server must count the caller's silence from that ping, not
    # from the request (a zrpc bug once). Ten calls at once, so the outcome does not
    # hang on a one-millisecond race.
    checks = run_zerorpc_client(zrpc_server(), "slow", 3.5, 10, passive=True)
    assert len(checks) == 10
    for record in checks.values():
        assert value_of(record) == "slept 3.5"


def test_passive_zerorpc_client_against_zerorpc_own_server(zerorpc_server):
    # The control for the test above: zerorpc's own server keeps passive callers.
    endpoint, _ = zerorpc_server()
    checks = run_zerorpc_client(endpoint, "slow", 3.5, 10, passive=True)
    assert len(checks) == 10
    for record in checks.values():
        assert value_of(record) == "slept 3.5"


def test_zerorpc_client_breaking_a_zrpc_stream_stops_it_after_heartbeat_loss(zrpc_server, serve, tmp_path):
    service = Service()
    endpoint = zrpc_server(service=service)
    release = tmp_path / "release"
    proc = start_zerorpc_client(endpoint, "stream_break", 5, release)
    # zerorpc sends no cancel: its client just stops heartbeating the closed channel.
    stopped = wait_until(lambda: service.endless_stopped_at is not None, timeout=3 * HB + 10)
    release.touch()
    checks = finish_zerorpc_client(proc)
    assert stopped, "the zrpc generator still runs after the zerorpc client closed the stream"
    assert value_of(checks["stream_break"]) == [0, 1, 2, 3, 4]
    lag = service.endless_stopped_at - checks["stream_break"]["closed_at"]
    assert 0.3 * HB <= lag <= 3 * HB + 2, lag
    assert value_of(checks["released"]) is True
    assert value_of(checks["after_break"]) == 6
    assert serve.servers[-1].calls_in_flight == 0


def test_zerorpc_client_timeout_lets_the_zrpc_server_cancel_the_call(zrpc_server, serve, tmp_path):
    service = Service()
    endpoint = zrpc_server(service=service)
    server = serve.servers[-1]
    release = tmp_path / "release"
    proc = start_zerorpc_client(endpoint, "slow_timeout", 30, 1, release)
    assert wait_until(lambda: server.calls_in_flight == 1, timeout=10)
    # zerorpc's client gives up after 1 s and stops heartbeating; zrpc notices within ~2 intervals.
    cancelled = wait_until(lambda: service.cancelled and server.calls_in_flight == 0, timeout=1 + 3 * HB + 5)
    release.touch()
    checks = finish_zerorpc_client(proc)
    assert checks["slow_timeout"]["error"]["type"] == "TimeoutExpired"
    assert cancelled, "the zrpc server kept running a call whose zerorpc caller gave up"
    assert value_of(checks["after_timeout"]) == 8


def test_zrpc_server_stop_fails_a_zerorpc_call_in_flight_cleanly(zrpc_server, serve):
    endpoint = zrpc_server()
    server = serve.servers[-1]
    proc = start_zerorpc_client(endpoint, "slow", 30, call_timeout=20)
    assert wait_until(lambda: server.calls_in_flight == 1, timeout=10)
    server.stop(0)
    record = finish_zerorpc_client(proc)["slow"]
    assert (record["error"]["type"], record["error"]["name"]) == ("RemoteError", "ServerStopped")
    assert record["elapsed"] < 10


# ==============================================================================
# 2. zrpc client -> zerorpc server
# ==============================================================================
def test_zrpc_client_plain_calls(zerorpc_server, client_factory, transport, ipc_dir):
    endpoint, _ = zerorpc_server(None if transport == "tcp" else f"ipc://{ipc_dir}/s")
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    assert client.add(10, 20) == 30
    assert client.call("add", 1, 2) == 3
    value = {"s": "héllo ✓", "b": b"\x00\xff", "l": [1, 2.5, None, True, False], "n": -(2 ** 40)}
    assert client.echo(value) == value
    assert client.greet("bob") == "hello bob"
    big = b"\x01" * 5_000_000
    assert client.echo(big) == big


def test_zrpc_client_200_concurrent_calls(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    futures = [client.add.call_async(i, i) for i in range(200)]
    assert gevent.wait(futures, timeout=20)
    assert [f.get() for f in futures] == [2 * i for i in range(200)]


def test_zrpc_client_sees_zerorpc_errors(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    with pytest.raises(zrpc.RemoteError) as info:
        client.boom()
    assert (info.value.name, info.value.msg) == ("ValueError", "boom from zerorpc")
    assert "Traceback (most recent call last)" in info.value.traceback
    assert "ValueError: boom from zerorpc" in info.value.traceback
    with pytest.raises(zrpc.RemoteError) as info:
        client.no_such_method(1)
    assert (info.value.name, info.value.msg) == ("NameError", "no_such_method")
    with pytest.raises(zrpc.RemoteError) as info:
        client.add(1)
    assert info.value.name == "TypeError"
    assert client.add(1, 1) == 2


def test_zrpc_client_builtins_of_zerorpc_without_getargspec(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    assert client._zerorpc_ping() == ["pong", "zerorpc_peer"]
    assert client._zerorpc_name() == "zerorpc_peer"
    assert sorted(client._zerorpc_list()) == [
        "add", "boom", "count", "count_then_fail", "echo", "endless", "greet", "seen", "slow"]
    assert client._zerorpc_help("greet") == "Greet someone.\n\nThe greeting defaults to hello."
    # zerorpc 0.6.3 itself cannot describe arguments on Python 3.11: a clean error, not a hang.
    for builtin, args in (("_zerorpc_args", ("greet",)), ("_zerorpc_inspect", ())):
        with pytest.raises(zrpc.RemoteError) as info:
            client.call(builtin, *args)
        assert info.value.name == "AttributeError" and "getargspec" in info.value.msg
    assert client.add(1, 1) == 2


def test_zrpc_client_introspects_zerorpc_like_zrpc(zerorpc_server, zrpc_server, client_factory):
    endpoint, _ = zerorpc_server(shim=True)
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    assert client._zerorpc_args("greet") == [["name", "greeting"], None, None, ["hello"]]
    theirs = client._zerorpc_inspect()
    assert theirs["name"] == "zerorpc_peer"
    assert theirs["methods"]["greet"] == {
        "args": [{"name": "name"}, {"name": "greeting", "default": "hello"}],
        "doc": "Greet someone.\n\nThe greeting defaults to hello.",
    }
    # A zrpc server describes the same functions the same way (plus its own keys).
    ours = client_factory(zrpc_server(), timeout=10, heartbeat=HB)._zerorpc_inspect()
    for method in ("add", "echo", "greet", "boom", "count", "count_then_fail"):  # same signatures
        mine = {k: ours["methods"][method][k] for k in ("args", "doc")}
        assert mine == theirs["methods"][method], method


def test_zrpc_keyword_arguments_to_zerorpc_fail_clearly(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    with pytest.raises(zrpc.KeywordArgumentsUnsupported) as info:
        client.greet("bob", greeting="hi")
    message = str(info.value)
    assert "greet()" in message and "greeting" in message and "positionally" in message
    assert isinstance(info.value, TypeError)
    assert client.greet("bob", "hi") == "hi bob"  # positionally it works, same connection


def test_zrpc_client_reads_a_long_zerorpc_stream(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB, stream_window=64)
    items = []
    with client.count(1000) as stream:
        for item in stream:
            items.append(item)
            if len(items) == 1:
                gevent.sleep(0.3)  # a sender that ignores credit overflows the 64-item window now
    assert items == list(range(1000))
    assert list(client.count(0)) == []
    assert client.add(2, 2) == 4


def test_zrpc_client_gets_a_zerorpc_mid_stream_error_after_the_items(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    items = []
    with pytest.raises(zrpc.RemoteError) as info:
        for item in client.count_then_fail(150):
            items.append(item)
    assert items == list(range(150))
    assert (info.value.name, info.value.msg) == ("ValueError", "stream broke after 150 items")


def test_zrpc_client_call_longer_than_two_zerorpc_heartbeats(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    started = time.monotonic()
    assert client.slow(3.5) == "slept 3.5"
    assert time.monotonic() - started >= 3.5


def test_zerorpc_server_killed_mid_call_is_lost_not_a_hang(zerorpc_server, client_factory, tmp_path):
    endpoint, proc = zerorpc_server()
    client = client_factory(endpoint, timeout=30, heartbeat=HB)  # the timeout is not what saves us
    started_path = str(tmp_path / "started")
    future = client.slow.call_async(60, started_path)
    assert wait_until(lambda: os.path.exists(started_path), timeout=10)
    proc.kill()
    future.wait(timeout=2 * HB + 4)  # returns None on an error too: check ready() below
    assert future.ready(), "the call hung after its server died"
    with pytest.raises(zrpc.LostRemote):  # the heartbeat noticed: the 30 s timeout is far off
        future.get()
    # And a new call to the dead endpoint is bounded by its timeout.
    before = time.monotonic()
    with pytest.raises(zrpc.TimeoutExpired):
        client.with_options(timeout=0.5).add(1, 1)
    assert time.monotonic() - before < 3


def test_zrpc_timeout_against_zerorpc_leaves_the_connection_usable(zerorpc_server, client_factory, tmp_path):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    started = time.monotonic()
    with pytest.raises(zrpc.TimeoutExpired):
        client.with_options(timeout=0.5).slow(5)  # zerorpc ignores the _zrpc_cancel that follows
    assert time.monotonic() - started < 3
    assert client.add(2, 3) == 5


def test_zrpc_closing_a_zerorpc_stream_early_stops_it_after_heartbeat_loss(
        zerorpc_server, client_factory, tmp_path):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    marker = str(tmp_path / "endless-stopped")
    stream = client.endless(marker, 0.01)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    gevent.sleep(2.5 * HB)  # heartbeats keep an open stream alive past two intervals...
    assert not os.path.exists(marker), "the zerorpc generator stopped while the stream was open"
    assert next(stream) == 5
    stream.close()
    closed = time.monotonic()
    # ...and once zrpc stops heartbeating the abandoned channel, zerorpc gives up on it.
    assert wait_until(lambda: os.path.exists(marker), timeout=3 * HB + 5), \
        "the zerorpc server's generator still runs after the stream was closed"
    # Not at once (zerorpc ignores _zrpc_cancel): two intervals after zrpc's last
    # heartbeat, which went out up to 1.5 intervals before the close.
    assert time.monotonic() - closed >= 0.3 * HB
    with open(marker) as f:
        how, produced = f.read().split()
    assert how in ("GeneratorExit", "LostRemote"), how
    # While nobody read, zrpc's credit held the generator to about one window.
    assert int(produced) <= 6 + 2 * client.stream_window, produced
    assert client.add(1, 2) == 3


# ==============================================================================
# 3. A zrpc client's plain use needs nothing zerorpc does not know
# ==============================================================================
def test_zrpc_plain_calls_send_only_zerorpc_events_and_headers(zerorpc_server, client_factory):
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB)
    assert client.add(1, 2) == 3
    with pytest.raises(zrpc.RemoteError):
        client.boom()
    with pytest.raises(zrpc.RemoteError):
        client.no_such_method()
    assert client._zerorpc_ping() == ["pong", "zerorpc_peer"]
    assert list(client.count(300)) == list(range(300))  # credit: _zpc_more
    assert client.slow(2.5) == "slept 2.5"  # heartbeats: _zpc_hb
    batch = client.batch()
    for i in range(10):
        batch.add(i, 1)
    assert batch.run() == [i + 1 for i in range(10)]
    seen = client.seen()

    names = {name for name, *_ in seen}
    assert names - {"seen"} == {"add", "boom", "no_such_method", "_zerorpc_ping", "count", "slow",
                                "_zpc_more", "_zpc_hb"}
    for name, keys, version, id_type, response_to_type in seen:
        if name.startswith("_zpc_"):
            assert set(keys) <= {"message_id", "v", "response_to"}, (name, keys)
        elif name != "seen":  # a request: plus zrpc's deadline, which zerorpc ignores (test_deadlines.py)
            assert set(keys) == {"message_id", "v", "zrpc_timeout"}, (name, keys)
        assert version == 3, (name, version)
        assert id_type == "bytes", (name, id_type)
        if name.startswith("_zpc_"):
            assert response_to_type == "bytes", (name, response_to_type)
        else:  # a request opens a channel
            assert response_to_type is None, (name, response_to_type)
