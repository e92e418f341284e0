"""Balancing over real server processes and real sockets: a frozen replica, a stopping one, DNS, a bound client.

Every server that is frozen, stopped or killed is a process of its own
(tests/peers/zrpc_replica.py); the clients run here, on gevent and asyncio.
"""
import asyncio
import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Sequence

import gevent
import pytest

import zrpc
import zrpc.aio
from conftest import free_tcp_endpoint, wait_until

HB = 0.5  # heartbeat of every client and server here: a hung server is noticed in ~1.6 s
CALLERS = 32


def replicas(peer: Callable[..., Any], count: int, *extra: str) -> List[Any]:
    """``count`` replica processes, each serving on a free port of its own: [(process, endpoint)]."""
    out = []
    for _ in range(count):
        endpoint = free_tcp_endpoint()
        out.append((peer("zrpc_replica.py", "bind", endpoint, str(HB), *extra), endpoint))
    return out


def bound(callers: int, servers: int) -> int:
    """The most calls a hung server can cost (zrpc/core/balancing.py): floor((C - 1) / S) + 1."""
    return (callers - 1) // servers + 1


class Load:
    """``CALLERS`` greenlets calling ``whoami`` in a closed loop until stopped; failures kept by type."""

    def __init__(self, client: zrpc.Client, callers: int = CALLERS) -> None:
        self.client = client
        self.served: Dict[int, int] = {}
        self.failures: List[BaseException] = []
        self.running = True
        self.greenlets = [gevent.spawn(self._caller) for _ in range(callers)]

    def _caller(self) -> None:
        deadline = time.monotonic() + 60
        while self.running and time.monotonic() < deadline:
            try:
                pid = self.client.whoami()
            except zrpc.ZrpcError as exc:
                self.failures.append(exc)
            else:
                self.served[pid] = self.served.get(pid, 0) + 1

    def stop(self) -> None:
        self.running = False
        assert gevent.joinall(self.greenlets, timeout=30) and all(g.dead for g in self.greenlets)


def test_a_frozen_server_costs_at_most_its_share_of_the_callers_and_is_probed_back(peer, client_factory):
    servers = replicas(peer, 3)
    client = client_factory([ep for _, ep in servers], heartbeat=HB, timeout=30)
    frozen, _ = servers[0]
    load = Load(client)
    try:
        assert wait_until(lambda: len(load.served) == 3, timeout=15)  # everyone serves
        os.kill(frozen.pid, signal.SIGSTOP)
        gevent.sleep(5 * HB)  # loss (3 intervals) and ejection happen meanwhile
        backend = next(b for b in client._session.balancer.backends if b.endpoint == servers[0][1])
        assert backend.ejected
        failed = len(load.failures)
        assert 0 < failed <= bound(CALLERS, 3), load.failures
        print(f"a frozen server of 3 cost {failed} calls of {CALLERS} callers (bound {bound(CALLERS, 3)})")
        assert all(isinstance(exc, zrpc.LostRemote) for exc in load.failures), load.failures
        gevent.sleep(4 * HB)  # probes go unanswered: the frozen server costs nothing more
        assert len(load.failures) == failed
        before = load.served.get(frozen.pid, 0)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # probed back in: it serves calls again, within the probe backoff (at most 6 intervals)
    assert wait_until(lambda: load.served.get(frozen.pid, 0) > before + 100, timeout=15)
    assert not backend.ejected
    load.stop()
    assert len(load.failures) == failed


def test_least_in_flight_steers_calls_away_from_a_slow_server(peer, client_factory):
    fast = replicas(peer, 2)
    slow = replicas(peer, 1, "--delay", "0.05")
    client = client_factory([ep for _, ep in fast + slow], heartbeat=HB)
    load = Load(client, callers=8)
    gevent.sleep(2.0)
    load.stop()
    assert not load.failures
    slow_pid = slow[0][0].pid
    served_fast = sum(n for pid, n in load.served.items() if pid != slow_pid)
    # round robin would give the slow server a third; least in flight a small fraction
    assert load.served.get(slow_pid, 0) < served_fast / 10, load.served


def test_calls_refused_by_a_stopping_server_are_retried_on_the_other_and_none_fails(peer, client_factory):
    servers = replicas(peer, 2, "--delay", "0.01", "--grace", "5")
    client = client_factory([ep for _, ep in servers], heartbeat=HB)
    load = Load(client, callers=16)
    stopping, _ = servers[0]
    try:
        assert wait_until(lambda: len(load.served) == 2, timeout=15)
        served_before = sum(load.served.values())
        stopping.send_signal(signal.SIGTERM)
        stopping.wait(timeout=15)  # it drains and exits while the calls go on
        assert stopping.returncode == 0, stopping.communicate()[1]
        gevent.sleep(0.5)
    finally:
        load.stop()
    assert load.failures == []
    assert sum(load.served.values()) > served_before + 100
    assert set(load.served) == {p.pid for p, _ in servers}


def test_a_rolling_restart_loses_no_call(peer, client_factory):
    # A drains and exits, a new A starts on the same endpoint, then B drains: the new A must be
    # back in the rotation by the time B refuses calls (a new connection is a clean slate), so
    # B's ServerStopping refusals are retried on it and not one call fails.
    servers = replicas(peer, 2, "--delay", "0.005", "--grace", "5")
    (first_a, endpoint_a), (server_b, _) = servers
    client = client_factory([ep for _, ep in servers], heartbeat=HB, timeout=10)
    backend_a = next(b for b in client._session.balancer.backends if b.endpoint == endpoint_a)
    load = Load(client, callers=8)
    try:
        assert wait_until(lambda: len(load.served) == 2, timeout=15)
        # long calls, some on A: it drains them for 2.5 s, answering probes ServerStopping
        # meanwhile, so its next probe is seconds away when the new A comes up
        only_a = client_factory(endpoint_a, heartbeat=HB, timeout=10)
        long_calls = [only_a.sleep.call_async(2.5) for _ in range(2)]
        assert wait_until(lambda: only_a._session.balancer.backends[0].in_flight == 2, timeout=5)
        first_a.send_signal(signal.SIGTERM)
        first_a.wait(timeout=15)
        assert backend_a.ejected and backend_a.backoff >= 2 * HB  # it said ServerStopping while it drained
        assert all(call.get(timeout=10) for call in long_calls)
        second_a = peer("zrpc_replica.py", "bind", endpoint_a, str(HB), "--delay", "0.005", "--grace", "5")
        # the client's socket reconnects to the new process (zmq retries every 100 ms)
        assert wait_until(lambda: backend_a.transport.connections == 1, timeout=15, step=0.005)
        # back at once with its new connection, not at its next probe (seconds away by now)
        assert wait_until(lambda: not backend_a.ejected, timeout=0.1, step=0.005)
        server_b.send_signal(signal.SIGTERM)  # at once: its refusals must find the new A
        server_b.wait(timeout=15)
        served_by_new_a = load.served.get(second_a.pid, 0)
        assert wait_until(lambda: load.served.get(second_a.pid, 0) > served_by_new_a + 100, timeout=10)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]


def test_a_request_that_waited_for_a_server_tells_it_what_is_left_of_its_timeout(client_factory):
    endpoint = free_tcp_endpoint()
    client = client_factory(endpoint, heartbeat=HB, timeout=3)
    started = time.monotonic()
    future = client.call_async("remaining")  # no server yet: call_async still returns at once
    assert time.monotonic() - started < 0.5 and not future.ready()
    gevent.sleep(1.5)
    server = zrpc.Server({"remaining": lambda: zrpc.current_call().remaining()}, heartbeat=HB)
    try:
        server.bind(endpoint)
        server.start()
        seen = future.get(timeout=10)
        left = 3 - (time.monotonic() - started)
        assert seen <= left + 0.2 and seen < 2.0, (seen, left)  # not the whole 3 s again
    finally:
        server.close()


def test_with_every_server_stopping_the_caller_gets_server_stopping(serve, client_factory):
    servers = [zrpc.Server({"f": lambda: 1}, heartbeat=HB) for _ in range(2)]
    endpoints = []
    for server in servers:
        endpoints.append(server.bind("tcp://127.0.0.1:*"))
        server.start()
    try:
        client = client_factory(endpoints, heartbeat=HB)
        assert client.f() == 1
        stops = [gevent.spawn(server.stop, 5) for server in servers]
        gevent.sleep(0.02)
        with pytest.raises(zrpc.ServerStopping) as info:
            client.f()
        assert isinstance(info.value, zrpc.RemoteError) and info.value.name == "ServerStopping"
        gevent.joinall(stops, timeout=10)
    finally:
        for server in servers:
            server.close()


# -- DNS ----------------------------------------------------------------------------
class Records:
    """A resolver to inject: the addresses it answers change when the test says so."""

    def __init__(self, *addresses: str) -> None:
        self.addresses: Sequence[str] = addresses
        self.asked = 0

    def __call__(self, host: str, port: int, family: int, type: int) -> List[Any]:
        self.asked += 1
        assert host == "service.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in self.addresses]


def loopback_servers(port: int, *addresses: str) -> Dict[str, zrpc.Server]:
    """A gevent server per loopback address (127.0.0.x all reach this host on Linux), same port, each saying who it is."""
    servers = {}
    for address in addresses:
        server = zrpc.Server({"who": lambda address=address: address,
                              "sleep": lambda s, address=address: (gevent.sleep(s), address)[1]},
                             heartbeat=HB)
        server.bind(f"tcp://{address}:{port}")
        servers[address] = server.start()
    return servers


def test_every_address_of_a_name_is_a_server_and_changes_follow_the_records(client_factory):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    servers = loopback_servers(port, "127.0.0.1", "127.0.0.2", "127.0.0.3")
    records = Records("127.0.0.1", "127.0.0.2")
    try:
        client = client_factory(f"tcp://service.test:{port}", heartbeat=HB, dns_refresh=0.2, resolver=records)
        seen = {client.who() for _ in range(20)}
        assert seen == {"127.0.0.1", "127.0.0.2"}
        long_call = client.sleep.call_async(1.5)  # on one of them
        gevent.sleep(0.05)
        leaving = next(b for b in client._session.balancer.backends if b.in_flight)
        keep = "127.0.0.2" if "127.0.0.1" in leaving.endpoint else "127.0.0.1"
        records.addresses = [keep, "127.0.0.3"]
        assert wait_until(lambda: leaving.removed, timeout=5)
        assert {client.who() for _ in range(20)} == {keep, "127.0.0.3"}
        assert leaving.transport in client._transports  # still open: its call is in flight
        assert long_call.get(timeout=10) in leaving.endpoint  # it finished where it started
        assert wait_until(lambda: leaving.transport not in client._transports, timeout=5)
        assert client.endpoints and all(leaving.endpoint != ep for ep in client.endpoints)
        records.addresses = []  # a failed lookup keeps the servers
        gevent.sleep(0.5)
        assert {client.who() for _ in range(20)} == {keep, "127.0.0.3"}
    finally:
        for server in servers.values():
            server.close()


def test_a_name_resolves_through_getaddrinfo_by_default(serve, client_factory):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    servers = loopback_servers(port, "127.0.0.1")
    try:
        client = client_factory(f"tcp://localhost:{port}", heartbeat=HB)
        assert client.who() == "127.0.0.1"
        assert client.endpoints == [f"tcp://{a}:{port}" for a in
                                    dict.fromkeys(r[4][0] for r in socket.getaddrinfo("localhost", port, 0,
                                                                                     socket.SOCK_STREAM))]
    finally:
        for server in servers.values():
            server.close()


def test_aaaa_and_a_records_are_both_servers(client_factory):
    import zmq

    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    v4 = zrpc.Server({"who": lambda: "v4"}, heartbeat=HB)
    v4.bind(f"tcp://127.0.0.1:{port}")
    v6 = zrpc.Server({"who": lambda: "v6"}, heartbeat=HB, socket_options={zmq.IPV6: 1})
    v6.bind(f"tcp://[::1]:{port}")
    for server in (v4, v6):
        server.start()

    def resolver(host: str, port: int, family: int, type: int) -> List[Any]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    try:
        client = client_factory(f"tcp://service.test:{port}", heartbeat=HB, resolver=resolver)
        assert sorted(client.endpoints) == sorted([f"tcp://[::1]:{port}", f"tcp://127.0.0.1:{port}"])
        assert {client.who() for _ in range(10)} == {"v4", "v6"}
    finally:
        v4.close()
        v6.close()


def test_a_name_that_does_not_resolve_yet_is_tried_by_zmq_until_its_records_come(client_factory):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    servers = loopback_servers(port, "127.0.0.2")

    def resolver(host: str, port: int, family: int, type: int) -> List[Any]:
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers]

    answers: List[str] = []
    try:
        client = client_factory(f"tcp://service.test:{port}", heartbeat=HB, dns_refresh=0.2,
                                resolver=resolver, timeout=10)
        assert client.endpoints == [f"tcp://service.test:{port}"]  # zmq's to resolve meanwhile
        answers.append("127.0.0.2")
        assert client.who() == "127.0.0.2"  # waits for the record, within its timeout
        assert wait_until(lambda: client.endpoints == [f"tcp://127.0.0.2:{port}"], timeout=5)
    finally:
        for server in servers.values():
            server.close()


def test_resolver_none_hands_the_name_to_zmq(client_factory):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    servers = loopback_servers(port, "127.0.0.1")
    try:
        client = client_factory(f"tcp://localhost:{port}", heartbeat=HB, resolver=None)
        assert client.endpoints == [f"tcp://localhost:{port}"]
        assert client.who() == "127.0.0.1"
    finally:
        for server in servers.values():
            server.close()


# -- the reverse topology: servers connect to a client that binds ---------------------
def test_a_second_server_on_a_bound_client_endpoint_fails_calls_clearly(peer, client_factory):
    client = client_factory(heartbeat=HB, timeout=10)
    endpoint = client.bind("tcp://127.0.0.1:*")
    first = peer("zrpc_replica.py", "connect", endpoint, str(HB))
    assert wait_until(lambda: client._transports[0].connections == 1, timeout=10)

    def stream_and_long_call() -> List[Any]:
        outcomes = []
        for job in (lambda: sum(client.count(1000)), lambda: client.sleep(2.5 * HB)):
            try:
                outcomes.append(job())
            except zrpc.TooManyServers as exc:
                outcomes.append(exc)
        return outcomes

    # one server: streams and long calls work
    jobs = [gevent.spawn(stream_and_long_call) for _ in range(3)]
    assert gevent.joinall(jobs, timeout=30)
    assert [j.value for j in jobs] == [[499500, first.pid]] * 3
    # a second one connects, mid-call: every call either succeeds or fails with TooManyServers
    jobs = [gevent.spawn(stream_and_long_call) for _ in range(3)]
    gevent.sleep(0.1)
    second = peer("zrpc_replica.py", "connect", endpoint, str(HB))
    assert gevent.joinall(jobs, timeout=30)
    for job in jobs:
        assert job.successful(), job.exception
        for outcome in job.value:
            assert outcome in (499500, first.pid) or isinstance(outcome, zrpc.TooManyServers), outcome
    assert any(isinstance(o, zrpc.TooManyServers) for j in jobs for o in j.value)
    # while both are connected, new calls fail at once, saying why
    started = time.monotonic()
    with pytest.raises(zrpc.TooManyServers, match="2 servers are connected"):
        client.whoami()
    assert time.monotonic() - started < 1
    # one leaves: calls work again, streams included
    second.kill()
    second.wait(timeout=10)
    assert wait_until(lambda: client._transports[0].connections == 1, timeout=10)
    assert stream_and_long_call() == [499500, first.pid]


# -- asyncio: the same decisions, the other driver --------------------------------------
def test_aio_client_ejects_a_frozen_server_and_retries_server_stopping(peer):
    servers = replicas(peer, 3, "--delay", "0.005", "--grace", "5")
    (frozen, _), (stopping, _), _ = servers

    async def main() -> None:
        async with zrpc.aio.Client([ep for _, ep in servers], heartbeat=HB, timeout=30) as client:
            served: Dict[int, int] = {}
            failures: List[BaseException] = []
            running = True

            async def caller() -> None:
                deadline = time.monotonic() + 60
                while running and time.monotonic() < deadline:
                    try:
                        pid = await client.whoami()
                    except zrpc.ZrpcError as exc:
                        failures.append(exc)
                    else:
                        served[pid] = served.get(pid, 0) + 1

            tasks = [asyncio.ensure_future(caller()) for _ in range(CALLERS)]
            for _ in range(300):
                if len(served) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(served) == 3
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(5 * HB)
                lost = len(failures)
                assert 0 < lost <= bound(CALLERS, 3), failures
                assert all(isinstance(exc, zrpc.LostRemote) for exc in failures)
                stopping.send_signal(signal.SIGTERM)  # the one left answering takes everything
                for _ in range(300):
                    if stopping.poll() is not None:
                        break
                    await asyncio.sleep(0.05)
                assert stopping.returncode == 0
                assert len(failures) == lost  # nothing refused by the stopping server reached a caller
                before = served.get(frozen.pid, 0)
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            for _ in range(300):
                if served.get(frozen.pid, 0) > before + 100:
                    break
                await asyncio.sleep(0.05)
            assert served.get(frozen.pid, 0) > before + 100  # probed back in
            running = False
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert len(failures) == lost

    asyncio.run(main())


def test_aio_client_follows_dns_records_resolved_in_the_background(peer):
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    first = peer("zrpc_replica.py", "bind", f"tcp://127.0.0.1:{port}", str(HB))
    second = peer("zrpc_replica.py", "bind", f"tcp://127.0.0.2:{port}", str(HB))
    records = Records("127.0.0.1")

    async def main() -> None:
        async with zrpc.aio.Client(f"tcp://service.test:{port}", heartbeat=HB, dns_refresh=0.2,
                                   resolver=records) as client:
            assert {await client.whoami() for _ in range(10)} == {first.pid}
            records.addresses = ["127.0.0.1", "127.0.0.2"]
            seen = set()
            for _ in range(200):
                seen.add(await client.whoami())
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.02)
            assert seen == {first.pid, second.pid}
            records.addresses = ["127.0.0.2"]
            for _ in range(200):
                if len(client._transports) == 1:
                    break
                await asyncio.sleep(0.02)
            assert client.endpoints == [f"tcp://127.0.0.2:{port}"]
            assert {await client.whoami() for _ in range(10)} == {second.pid}

    asyncio.run(main())


def test_an_aio_client_never_blocks_its_loop_resolving_a_name(peer):
    # A slow DNS answer (here: a resolver that takes 1 s) must not stall the asyncio loop, not even
    # in the constructor: the name is resolved in the executor, and calls wait for a server.
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    replica = peer("zrpc_replica.py", "bind", f"tcp://127.0.0.1:{port}", str(HB))
    records = Records("127.0.0.1")

    def slow_resolver(*args: Any) -> Any:
        time.sleep(1.0)
        return records(*args)

    async def main() -> None:
        ticks = []

        async def ticker() -> None:  # the loop's heartbeat: how long it ever went without running
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                ticks.append(now - last)
                last = now

        beat = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        async with zrpc.aio.Client(f"tcp://service.test:{port}", heartbeat=HB, timeout=10,
                                   resolver=slow_resolver) as client:
            assert time.monotonic() - started < 0.5
            assert await client.whoami() == replica.pid  # once the answer came
        beat.cancel()
        assert max(ticks) < 0.5, max(ticks)

    asyncio.run(main())
