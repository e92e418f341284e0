"""Overload, frozen and dead peers, oversized requests and ipc files: each over real sockets."""
import os
import signal
import tempfile
import time

import gevent
import pytest

import zrpc

from conftest import free_tcp_endpoint, wait_until


def test_a_killed_server_fails_its_calls_at_once_through_the_connection(peer, client_factory):
    endpoint = free_tcp_endpoint()
    proc = peer("zrpc_server.py", endpoint, "5")
    client = client_factory(endpoint, timeout=60, heartbeat=5)
    pending = client.sleep.call_async(30)
    assert wait_until(lambda: client._transports[0].connections == 1)
    gevent.sleep(0.2)  # the call reached the server
    started = time.monotonic()
    proc.kill()
    with pytest.raises(zrpc.LostRemote, match="connection dropped"):
        pending.get(timeout=10)
    # libzmq saw the disconnect: no need to wait two heartbeat intervals (10 s).
    assert time.monotonic() - started < 2.0


def test_a_frozen_server_is_lost_after_two_heartbeat_intervals(peer, client_factory):
    heartbeat = 0.5
    endpoint = free_tcp_endpoint()
    proc = peer("zrpc_server.py", endpoint, str(heartbeat))
    client = client_factory(endpoint, timeout=60, heartbeat=heartbeat)
    assert client.add(1, 2) == 3
    pending = client.sleep.call_async(30)
    gevent.sleep(2 * heartbeat)  # both sides have pinged: the server's silence is measured from now
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(zrpc.LostRemote, match="no heartbeat"):
            pending.get(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # Silence counts from the last event heard (at most 1.25 intervals before the freeze, as
    # pings go out that often); the sweep runs every quarter interval.
    assert 0.75 * heartbeat <= elapsed < 2.25 * heartbeat + 0.5, elapsed


def test_closed_servers_remove_the_ipc_files_they_bound():
    with tempfile.TemporaryDirectory(prefix="zrpc-ipc-") as tmp:
        for i in range(200):
            server = zrpc.Server({"add": lambda a, b: a + b})
            server.bind(f"ipc://{tmp}/s{i}")
            server.start()
            server.close()
        assert os.listdir(tmp) == []


def test_an_oversized_request_is_refused_before_sending(serve, client_factory):
    client = client_factory(serve({"echo": lambda x: x}), timeout=10, max_message_size=1 << 20)
    started = time.monotonic()
    with pytest.raises(zrpc.ProtocolError, match="over max_message_size"):
        client.echo(b"x" * (2 << 20))
    assert time.monotonic() - started < 1.0
    assert client.echo(b"ok") == b"ok"  # the client goes on


def test_every_queued_call_completes_and_keeps_its_heartbeats(peer, client_factory):
    """pool_size 10, thousands of 10 ms calls queued, heartbeats much shorter than the wait."""
    endpoint = free_tcp_endpoint()
    peer("zrpc_server.py", endpoint, "0.5", "--pool-size", "10")
    client = client_factory(endpoint, timeout=120, heartbeat=0.5)
    n = 4000  # 4 s of work: 8 heartbeat intervals for the last callers
    futures = [client.sleep.call_async(0.01) for _ in range(n)]
    gevent.joinall(futures, timeout=90)
    failures = [f.exception for f in futures if not f.successful()]
    assert failures == [], f"{len(failures)} of {n} failed, e.g. {failures[:3]}"


def test_max_pending_refuses_at_once_with_server_busy(peer, client_factory):
    endpoint = free_tcp_endpoint()
    peer("zrpc_server.py", endpoint, "5", "--pool-size", "1", "--max-pending", "5")
    client = client_factory(endpoint, timeout=30)
    futures = [client.sleep.call_async(0.5) for _ in range(10)]
    gevent.joinall(futures, timeout=20)
    ok = [f for f in futures if f.successful()]
    busy = [f.exception for f in futures if not f.successful()]
    assert len(ok) == 6  # one running, five waiting
    assert len(busy) == 4 and all(isinstance(e, zrpc.ServerBusy) for e in busy), busy
    assert "max_pending" in str(busy[0])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_frozen_client_with_replies_piling_up_costs_no_cpu_and_delays_nobody(peer, client_factory):
    endpoint = free_tcp_endpoint()
    server = peer("zrpc_server.py", endpoint, "5")
    # More replies than the per-peer queue holds, so the server's sends to it must wait.
    flood = peer("zrpc_flood_client.py", endpoint, "12000", "4096")
    os.kill(flood.pid, signal.SIGSTOP)
    try:
        client = client_factory(endpoint, timeout=30, heartbeat=5)
        assert client.add(1, 1) == 2
        # Let the server work through the 12,000 requests it already has (bounded: a server
        # that spins never settles, and then fails the CPU check below).
        previous = _cpu_seconds(server.pid)
        for _ in range(40):
            gevent.sleep(0.5)
            now = _cpu_seconds(server.pid)
            if now - previous < 0.05:
                break
            previous = now
        cpu_before, started = _cpu_seconds(server.pid), time.monotonic()
        slowest = 0.0
        for i in range(30):  # 3 s of calls from an innocent client
            t = time.monotonic()
            assert client.add(i, 1) == i + 1
            slowest = max(slowest, time.monotonic() - t)
            gevent.sleep(0.1)
        busy = _cpu_seconds(server.pid) - cpu_before
        window = time.monotonic() - started
    finally:
        os.kill(flood.pid, signal.SIGCONT)
    assert slowest < 0.5, f"an innocent call took {slowest:.2f}s"
    assert busy < 0.3 * window, f"the server used {busy:.2f}s of CPU in {window:.1f}s"


def test_a_message_far_over_the_server_limit_fails_at_once_naming_the_limit(serve, client_factory):
    # The server drops the connection of a sender over 4x its limit (libzmq MAXMSGSIZE);
    # a client without a limit of its own learns it at once, not after heartbeats.
    endpoint = serve({"echo": lambda x: x}, max_message_size=1 << 20)
    client = client_factory(endpoint, timeout=30, heartbeat=5, max_message_size=None)
    assert client.echo(b"small") == b"small"
    started = time.monotonic()
    with pytest.raises(zrpc.LostRemote, match="larger than its size limit"):
        client.echo(b"x" * (5 << 20))
    assert time.monotonic() - started < 5.0


def test_zerorpc_client_arguments_and_context_are_accepted(serve):
    import zerorpc

    endpoint = serve({"add": lambda a, b: a + b})
    client = zrpc.Client(endpoint, timeout=10, passive_heartbeat=True, context=zerorpc.Context())
    try:
        assert client.add(1, 2) == 3
    finally:
        client.close()  # zmq.green sockets take no linger argument: must not raise
