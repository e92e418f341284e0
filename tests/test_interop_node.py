"""Wire compatibility with zerorpc-node 0.9.8 (npm ``zerorpc``), both ways, over tcp on 127.0.0.1.

zerorpc-node always runs in a separate node process (tests/node/*.js,
installed by the session fixture ``node_peers`` from tests/node/package-lock.json):

* zerorpc-node client -> zrpc server: ``zerorpc_client.js`` makes the calls
  it is given (all at once, one channel each) and prints one JSON line per
  call; this process serves and asserts.
* zrpc client -> zerorpc-node server: ``zerorpc_server.js`` serves (READY
  when bound) and keeps the errors it saw (``errors()``, e.g. a caller whose
  heartbeats it lost); this process calls and asserts.

Heartbeats are 1 s on both sides (zerorpc-node's ``heartbeatInterval`` 1000 ms,
zrpc's ``heartbeat=1``), so "longer than two intervals" takes a few seconds.
zerorpc-node counts only ``_zpc_hb`` events as signs of life: a channel gets
"Lost remote after 2000ms" two intervals after the last one, whatever else
arrives on it.
"""
import json
import os
import time
from typing import Any, Dict, Iterator, List

import gevent
import gevent.subprocess
import pytest

import zrpc

from conftest import free_tcp_endpoint

HB = 1.0  # heartbeat interval (s) of both sides in every test here
HB_MS = str(int(HB * 1000))


class Service:
    """What the zerorpc-node client calls."""

    def add(self, a, b):
        return a + b

    def echo(self, x):
        return x

    def boom(self):
        raise ValueError("boom from zrpc")

    def slow(self, seconds):
        gevent.sleep(seconds)
        return "slept %s" % seconds

    @zrpc.stream
    def count(self, n):
        return iter(range(n))

    @zrpc.stream
    def ticking(self, n, delay):
        """n items, one every ``delay`` seconds (the first at once)."""
        for i in range(n):
            if i:
                gevent.sleep(delay)
            yield i


# -- helpers ---------------------------------------------------------------------
_procs: List[gevent.subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap_node_processes() -> Iterator[None]:
    """Kill any node process a test left running."""
    yield
    while _procs:
        proc = _procs.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def node_call(node_peers: str, endpoint: str, calls: List[Dict[str, Any]], limit: float = 30,
              call_timeout: int = 20) -> Dict[str, Dict[str, Any]]:
    """Make ``calls`` from a zerorpc-node client in a node process; return their records by check name."""
    proc = gevent.subprocess.Popen(
        ["node", os.path.join(node_peers, "zerorpc_client.js"), endpoint, json.dumps(calls),
         "--heartbeat", HB_MS, "--timeout", str(call_timeout)],
        stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True, cwd=node_peers)
    _procs.append(proc)
    try:
        out, err = proc.communicate(timeout=limit)
    except gevent.subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"zerorpc-node client still running after {limit}s:\n{out}\n{err}")
    assert proc.returncode == 0, f"zerorpc-node client failed ({proc.returncode}):\n{out}\n{err}"
    records = {}
    for line in out.splitlines():
        record = json.loads(line)
        records[record["check"]] = record
    assert sorted(records) == sorted(c["check"] for c in calls), f"missing results:\n{out}\n{err}"
    return records


def value_of(record: Dict[str, Any]) -> Any:
    """The value of a call that must have succeeded (else fail with the remote error)."""
    assert "error" not in record, f"call {record['check']} failed after {record['elapsed']}s: {record['error']}"
    return record["value"]


@pytest.fixture
def zrpc_server(serve) -> str:
    """Endpoint of a zrpc Service on tcp 127.0.0.1 with HB heartbeats."""
    return serve(Service(), "tcp://127.0.0.1:*", name="zrpc_service", heartbeat=HB)


@pytest.fixture
def node_server(node_peers) -> Iterator[str]:
    """Endpoint of a zerorpc-node server with HB heartbeats, in its own node process."""
    endpoint = free_tcp_endpoint()
    proc = gevent.subprocess.Popen(
        ["node", os.path.join(node_peers, "zerorpc_server.js"), endpoint, "--heartbeat", HB_MS],
        stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True, cwd=node_peers)
    _procs.append(proc)
    line = ""
    with gevent.Timeout(30, False):
        line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"zerorpc-node server did not start: {line!r}{out}\n{err}")
    yield endpoint


@pytest.fixture
def node_client(client_factory, node_server):
    """A zrpc client with HB heartbeats connected to a zerorpc-node server."""
    return client_factory(node_server, heartbeat=HB, timeout=20)


# ==============================================================================
# 1. zerorpc-node client -> zrpc server
# ==============================================================================
def test_node_client_calls_a_zrpc_server(node_peers, zrpc_server):
    records = node_call(node_peers, zrpc_server, [
        {"check": "add", "method": "add", "args": [10, 20]},
        {"check": "float", "method": "add", "args": [0.5, 2]},
        {"check": "str", "method": "echo", "args": ["héllo ✓"]},
        {"check": "bytes", "method": "echo", "args": [{"bytes": "00ff"}]},
        {"check": "nested", "method": "echo", "args": [{"l": [1, 2.5, None, True, False], "n": -(2 ** 40)}]},
        {"check": "null", "method": "echo", "args": [None]},
    ])
    assert value_of(records["add"]) == 30
    assert value_of(records["float"]) == 2.5
    assert value_of(records["str"]) == "héllo ✓"
    assert value_of(records["bytes"]) == {"bytes": "00ff"}  # bin stays bin (a Buffer)
    assert value_of(records["nested"]) == {"l": [1, 2.5, None, True, False], "n": -(2 ** 40)}
    assert value_of(records["null"]) is None


def test_node_client_sees_zrpc_errors_and_unknown_methods(node_peers, zrpc_server):
    records = node_call(node_peers, zrpc_server, [
        {"check": "boom", "method": "boom", "args": []},
        {"check": "unknown", "method": "no_such_method", "args": [1]},
    ])
    boom = records["boom"]["error"]
    assert (boom["name"], boom["message"]) == ("ValueError", "boom from zrpc")
    assert "ValueError: boom from zrpc" in boom["stack"]  # zrpc's traceback becomes the stack
    unknown = records["unknown"]["error"]
    assert (unknown["name"], unknown["message"]) == ("NameError", "no_such_method")


def test_node_client_reads_a_zrpc_stream(node_peers, zrpc_server):
    # 1000 items: far beyond zerorpc-node's buffer of 100, so _zpc_more credit flows both ways.
    records = node_call(node_peers, zrpc_server, [
        {"check": "count", "method": "count", "args": [1000]},
        {"check": "empty", "method": "count", "args": [0]},
    ])
    assert value_of(records["count"]) == list(range(1000))
    assert value_of(records["empty"]) == []


def test_node_client_call_longer_than_two_heartbeats(node_peers, zrpc_server):
    records = node_call(node_peers, zrpc_server, [{"check": "slow", "method": "slow", "args": [2.5 * HB]}])
    assert value_of(records["slow"]) == "slept 2.5"
    assert records["slow"]["elapsed"] >= 2.5 * HB


def test_node_client_reads_a_busy_stream_longer_than_two_heartbeats(node_peers, zrpc_server):
    # The tracker's bug: items every quarter interval kept zrpc from sending _zpc_hb on
    # the channel, and zerorpc-node (which only counts _zpc_hb) gave up after 2 intervals
    # with "HeartbeatError: Lost remote after 2000ms" although items kept arriving.
    n = 15  # 14 gaps of HB/4: 3.5 intervals
    records = node_call(node_peers, zrpc_server, [
        {"check": "ticking", "method": "ticking", "args": [n, HB / 4]},
        {"check": "slow", "method": "slow", "args": [1.5 * HB]},  # a quiet channel alongside
    ])
    assert value_of(records["ticking"]) == list(range(n)), f"got {records['ticking']['items']} items first"
    assert records["ticking"]["elapsed"] >= 3 * HB
    assert value_of(records["slow"]) == "slept 1.5"


# ==============================================================================
# 2. zrpc client -> zerorpc-node server
# ==============================================================================
def test_zrpc_client_calls_a_node_server(node_client):
    assert node_client.add(10, 20) == 30
    assert node_client.add(0.5, 2) == 2.5
    assert node_client.echo("héllo ✓") == "héllo ✓"
    assert node_client.echo(b"\x00\xff") == b"\x00\xff"  # a Buffer goes back as bin
    nested = {"l": [1, 2.5, None, True, False], "n": -(2 ** 40), "s": "x"}
    assert node_client.echo(nested) == nested
    assert node_client.errors() == []


def test_zrpc_client_sees_node_errors(node_client):
    with pytest.raises(zrpc.RemoteError) as thrown:
        node_client.boom()
    assert (thrown.value.name, thrown.value.msg) == ("TypeError", "boom from node")
    assert "TypeError: boom from node" in thrown.value.traceback  # the JS stack
    with pytest.raises(zrpc.RemoteError) as later:
        node_client.boomLater()
    assert (later.value.name, later.value.msg) == ("ValueError", "later boom from node")
    assert node_client.add(1, 2) == 3  # the connection is still fine


def test_zrpc_client_reads_a_node_stream(node_client):
    assert list(node_client.count(1000)) == list(range(1000))


def test_zrpc_client_call_to_node_longer_than_two_heartbeats(node_client):
    started = time.monotonic()
    assert node_client.slow(2.5 * HB) == "slept 2.5"
    assert time.monotonic() - started >= 2.5 * HB
    assert node_client.errors() == []  # zerorpc-node never lost our heartbeats


def test_zrpc_client_reads_a_busy_node_stream_longer_than_two_heartbeats(node_client):
    # The client grants credit (_zpc_more) all along; it must still ping the node server.
    n = 15
    started = time.monotonic()
    assert list(node_client.ticking(n, int(HB * 1000 / 4))) == list(range(n))
    assert time.monotonic() - started >= 3 * HB
    assert node_client.errors() == []


def test_zrpc_client_unknown_method_on_node_is_lost_not_a_hang(node_client):
    # zerorpc-node does not answer a method it lacks (nor _zrpc_kwcall): no reply, no
    # heartbeat. The zrpc client gives up two intervals after its first ping.
    started = time.monotonic()
    unknown = node_client.call_async("no_such_method", 1)
    keywords = node_client.call_async("add", 1, b=2)
    gevent.wait([unknown, keywords], timeout=10 * HB)
    assert isinstance(unknown.exception, zrpc.LostRemote), unknown.exception
    assert isinstance(keywords.exception, zrpc.LostRemote), keywords.exception
    assert 2 * HB <= time.monotonic() - started < 5 * HB
    assert node_client.add(1, 2) == 3
