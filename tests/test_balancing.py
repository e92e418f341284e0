"""Balancing decisions of the I/O-free core: least in flight, ejection, probes, ServerStopping, DNS.

No sockets here: a client session and server sessions joined in memory, the
clock a number the test moves. tests/test_balancing_live.py does the same
over real processes.
"""
from typing import Any, List, Tuple

import zrpc
import zrpc.aio
from zrpc.core import protocol
from zrpc.core.balancing import ResolvedName, addresses_of, split_tcp_endpoint, tcp_endpoint
from zrpc.core.client_session import ERROR, RESULT, RETRY, ClientCall, ClientSession
from zrpc.core.errors import LostRemote, RemoteError, ServerStopping
from zrpc.core.methods import MethodTable
from zrpc.core.server_session import SEND, START, ServerSession

HB = 1.0


class Service:
    def add(self, a: int, b: int) -> int:
        return a + b


def client_with(servers: int, heartbeat: float = HB) -> ClientSession:
    client = ClientSession(heartbeat=heartbeat, stream_window=4, max_message_size=None)
    for i in range(servers):
        client.balancer.add(f"socket-{i}", f"tcp://server-{i}")
    return client


def server() -> ServerSession:
    return ServerSession(MethodTable(Service()), heartbeat=HB, pool_size=None, send_tracebacks=True,
                         stream_generators=False, max_message_size=None)


def start(client: ClientSession, now: float = 0.0, timeout: float = 10.0) -> Tuple[ClientCall, bytes]:
    """A call sent where the session says (the first server in its order)."""
    call, payload = client.request("add", (1, 2), {}, timeout, now)
    client.sent(call, client.send_order()[0], now)
    return call, payload


def answer(srv: ServerSession, payload: bytes, now: float = 0.0) -> bytes:
    """The server session's one reply to a request (run inline, as a driver would)."""
    action = srv.receive([b"peer", b"", payload], now)
    if action[0] == SEND:
        return action[1][-1]
    assert action[0] == START
    call = action[1]
    _, func, args, kwargs = srv.methods.resolve(call.method, call.args)
    return srv.reply(call, protocol.OK, [func(*args, **kwargs)])


def names(backends: List[Any]) -> List[str]:
    return [b.endpoint for b in backends]


def test_a_new_call_goes_to_the_server_with_the_fewest_calls_in_flight():
    client = client_with(3)
    a, b, c = client.balancer.backends
    calls = [start(client)[0] for _ in range(3)]
    assert [call.backend for call in calls] == [a, b, c]  # equal counts: each in turn
    client.finish(calls[1])  # b is free again
    assert start(client)[0].backend is b
    assert (a.in_flight, b.in_flight, c.in_flight) == (1, 1, 1)


def test_ties_rotate_so_that_sequential_calls_spread():
    client = client_with(3)
    seen = []
    for _ in range(6):
        call = start(client)[0]
        seen.append(call.backend.endpoint)
        client.finish(call)
    assert sorted(seen) == sorted(names(client.balancer.backends) * 2)


def test_finishing_a_call_twice_counts_it_once():
    client = client_with(2)
    call = start(client)[0]
    client.finish(call)
    client.finish(call)
    assert [b.in_flight for b in client.balancer.backends] == [0, 0]


def test_heartbeat_loss_ejects_the_server_and_a_pong_brings_it_back():
    client = client_with(3)
    hung = client.balancer.backends[0]
    call = start(client)[0]
    assert call.backend is hung
    now = 0.0
    lost: List[Any] = []
    while not lost and now < 10:  # the sweep as a driver runs it, every tick
        now += client.tick
        pings, lost = client.heartbeats(now)
        for channel, _ in pings:
            client.pinged(channel, now)
    assert lost == [call]
    assert isinstance(client.lost(call), LostRemote)
    client.finish(call)
    assert hung.ejected and client.send_order()[-1] is hung and hung not in client.resend_order(call)
    # no probe before its backoff (one heartbeat interval) ...
    assert client.maintain(now)[0] == []
    # ... then a _zerorpc_ping of the client's own, not a user's call
    probes, _, _ = client.maintain(now + HB)
    assert [p.backend for p, _ in probes] == [hung]
    probe, payload = probes[0]
    assert protocol.decode(payload)[1] == "_zerorpc_ping"
    client.probe_sent(probe, now + HB)
    assert client.open_calls() == [] and hung.in_flight == 0
    assert client.receive(answer(server(), payload), now + HB + 0.01) is None  # the driver sees nothing
    assert not hung.ejected and hung in client.resend_order(call)


def test_an_unanswered_probe_doubles_the_wait_up_to_the_cap():
    client = client_with(2)
    hung = client.balancer.backends[0]
    client.balancer.eject(hung, 0.0, "test")
    now, waits, last = 0.0, [], 0.0
    for _ in range(200):
        now += client.tick
        probes, _, _ = client.maintain(now)
        for probe, _ in probes:
            client.probe_sent(probe, now)
            waits.append(round(now - last, 2))
            last = now
        if len(waits) == 6:
            break
    assert waits[0] == HB
    assert waits[1:] == sorted(waits[1:]) and waits[-1] <= 6 * HB + client.balancer.probe_timeout + client.tick
    assert hung.ejected


def test_a_probe_answered_with_server_stopping_keeps_the_server_out():
    client = client_with(2)
    stopping = client.balancer.backends[0]
    client.balancer.eject(stopping, 0.0, "test")
    probe, payload = client.maintain(HB)[0][0]
    client.probe_sent(probe, HB)
    srv = server()
    srv.stop(HB)
    assert client.receive(answer(srv, payload, HB), HB + 0.01) is None
    assert stopping.ejected and stopping.probe is None


def test_a_timeout_ejects_only_a_server_that_said_nothing_since_the_call_was_sent():
    client = client_with(2)
    quiet, busy = client.balancer.backends
    c1, _ = start(client, 0.0, timeout=2.0)
    c2, p2 = start(client, 0.0, timeout=2.0)
    assert (c1.backend, c2.backend) == (quiet, busy)
    c3, p3 = start(client, 0.0, timeout=2.0)  # busy answers another call meanwhile
    assert client.receive(answer(server(), p3 if c3.backend is busy else p2), 1.0)[0] == RESULT
    slow_busy = c2 if c3.backend is busy else c3
    assert client.expire(c1) is not None
    assert quiet.ejected
    assert client.expire(slow_busy) is not None
    assert not busy.ejected


def test_a_single_server_is_never_ejected():
    client = client_with(1)
    call = start(client, 0.0, timeout=1.0)[0]
    assert client.expire(call) is not None
    only = client.balancer.backends[0]
    assert not only.ejected and client.send_order() == [only]


def test_ejected_servers_come_last_so_a_call_still_goes_somewhere():
    client = client_with(3)
    a, b, c = client.balancer.backends
    client.balancer.eject(a, 0.0, "test")
    assert client.send_order()[-1] is a and set(client.send_order()[:2]) == {b, c}
    assert a not in client.resend_order(start(client)[0])
    client.balancer.eject(b, 0.0, "test")
    client.balancer.eject(c, 0.0, "test")
    assert set(client.send_order()) == {a, b, c}
    assert client.resend_order(start(client)[0]) == []  # but a ServerStopping retry goes nowhere


def test_server_stopping_is_retried_on_another_server_and_only_then():
    client = client_with(2)
    stopping_srv, good_srv = server(), server()
    stopping_srv.stop(0.0)
    call, payload = start(client)
    first = call.backend
    kind, same, error = client.receive(answer(stopping_srv, payload), 0.01)
    assert (kind, same) == (RETRY, call) and isinstance(error, ServerStopping)
    assert first.ejected and first.in_flight == 0
    order = client.resend_order(call)
    assert first not in order
    client.sent(call, order[0], 0.01)  # the driver sends the same request again
    assert call.attempts == 2
    # ...with what remains of the caller's 10 s, not all of it again
    assert protocol.decode(call.payload)[0]["zrpc_timeout"] == 10.0 - 0.01
    assert client.receive(answer(good_srv, call.payload), 0.02) == (RESULT, call, 3)
    # with the other server stopping too, the caller gets ServerStopping
    call, payload = client.request("add", (1, 2), {}, 10.0, 1.0)
    client.sent(call, order[0], 1.0)
    good_srv.stop(1.0)
    kind, _, error = client.receive(answer(good_srv, payload, 1.0), 1.01)
    assert kind == ERROR and isinstance(error, ServerStopping)


def test_a_client_with_one_server_keeps_no_copy_of_its_requests():
    assert client_with(1).request("add", (1, 2), {}, None, 0.0)[0].payload is None
    assert client_with(2).request("add", (1, 2), {}, None, 0.0)[0].payload is not None


def test_server_stopping_is_a_remote_error_exported_by_both_drivers():
    assert issubclass(zrpc.ServerStopping, RemoteError)
    assert zrpc.aio.ServerStopping is zrpc.ServerStopping is ServerStopping
    assert "ServerStopping" in zrpc.__all__ and "ServerStopping" in zrpc.aio.__all__
    assert zrpc.aio.TooManyServers is zrpc.TooManyServers


def test_a_stopping_server_session_refuses_until_callers_went_quiet():
    srv = server()
    srv.stop(10.0)
    assert abs(srv.refusing_for(10.0) - srv.STOP_QUIET) < 1e-9
    call = client_with(1).request("add", (1, 2), {}, None, 10.05)[1]
    assert srv.receive([b"peer", b"", call], 10.05)[0] == SEND  # refused: the quiet time starts again
    assert abs(srv.refusing_for(10.05) - srv.STOP_QUIET) < 1e-9
    assert srv.refusing_for(10.05 + srv.STOP_QUIET) == 0
    srv._last_refusal = 10.0 + srv.STOP_LINGER_MAX  # callers that never stop: bounded anyway
    assert srv.refusing_for(10.0 + srv.STOP_LINGER_MAX) == 0


# -- DNS names -------------------------------------------------------------------------
def test_which_endpoints_are_names_to_resolve():
    assert split_tcp_endpoint("tcp://service:4242") == ("service", 4242)
    assert split_tcp_endpoint("tcp://localhost:1") == ("localhost", 1)
    for literal in ("tcp://127.0.0.1:4242", "tcp://[::1]:4242", "tcp://*:1", "ipc:///tmp/x",
                    "tcp://eth0;service:1", "tcp://service:*", "inproc://x"):
        assert split_tcp_endpoint(literal) is None, literal
    assert tcp_endpoint("::1", 5) == "tcp://[::1]:5" and tcp_endpoint("10.0.0.1", 5) == "tcp://10.0.0.1:5"


def test_getaddrinfo_records_become_distinct_addresses():
    records = [(2, 1, 6, "", ("10.0.0.1", 80)), (10, 1, 6, "", ("fe80::1%eth0", 80, 0, 2)),
               (2, 1, 6, "", ("10.0.0.1", 80)), (10, 1, 6, "", ("::1", 80, 0, 0))]
    assert addresses_of(records) == ["10.0.0.1", "fe80::1", "::1"]


def test_a_name_adds_and_removes_servers_as_its_records_change():
    name = ResolvedName("tcp://svc:1", "svc", 1, refresh=30.0, now=0.0)
    assert not name.due(29.9) and name.due(30.0)
    name.started(30.0)
    assert not name.due(100.0)  # one resolution at a time
    assert name.changes(["a", "b"]) == (["a", "b"], [])
    name.backends.update(a="A", b="B")
    assert name.changes(["b", "c"]) == (["c"], ["A"])
    assert sorted(name.backends) == ["b"]
    assert name.changes([]) == ([], [])  # a failed lookup drops nothing


def test_a_removed_server_takes_no_call_and_is_closed_once_its_calls_are_over():
    client = client_with(2)
    a, b = client.balancer.backends
    call = start(client)[0]
    assert call.backend is a
    client.balancer.remove(a)
    assert client.send_order() == [b]
    client.balancer.eject(b, 0.0, "test")
    assert client.send_order() == [b]  # ejected, but removed ones never come back
    assert client.maintain(0.0)[1] == []  # a still has a call in flight
    client.finish(call)
    assert client.maintain(0.1)[1] == [a]
    assert client.balancer.backends == [b]


def test_a_timeout_shorter_than_a_heartbeat_interval_ejects_nobody():
    # A healthy server says nothing on a call younger than an interval: silence proves nothing yet.
    client = client_with(2)
    call = start(client, timeout=0.5 * HB)[0]
    client.expire(call)
    assert not any(b.ejected for b in client.balancer.backends)
    call = start(client, now=1.0, timeout=2 * HB)[0]  # two intervals of total silence: suspicious
    client.expire(call)
    assert call.backend.ejected


def test_a_reply_brings_an_ejected_server_back_unless_it_is_stopping():
    client = client_with(3)
    a, b, c = client.balancer.backends
    call, payload = start(client)
    client.balancer.eject(call.backend, 0.0, "test")  # say its heartbeats were lost, yet it answers
    assert call.backend.ejected
    client.receive(answer(server(), payload), 0.1)
    assert not call.backend.ejected
    # a stopping server answers the calls it drains, but stays out until a new connection or a pong
    stopping_srv = server()
    stopping_srv.stop(0.0)
    call, payload = start(client, now=1.0)
    kind, _, _ = client.receive(answer(stopping_srv, payload, 1.0), 1.01)
    assert kind == RETRY and call.backend.ejected and call.backend.stopping
    refused = call.backend
    other, other_payload = start(client, now=1.1)
    other.backend = refused  # pretend it was one of the calls it was still draining
    client.receive(answer(server(), other_payload, 1.1), 1.2)
    assert refused.ejected
    client.balancer.connected(refused)  # the restarted process is up
    assert not refused.ejected and not refused.stopping


def test_probes_given_up_on_leave_the_call_table():
    client = ClientSession(heartbeat=None, stream_window=4, max_message_size=None)
    for i in range(2):
        client.balancer.add(f"socket-{i}", f"tcp://server-{i}")
    frozen = client.balancer.backends[0]
    client.balancer.eject(frozen, 0.0, "test")
    now, sent = 0.0, 0
    for _ in range(200):  # an unanswering server probed again and again, for minutes
        now += 1.0
        for call, _ in client.maintain(now)[0]:
            client.probe_sent(call, now)
            sent += 1
        assert len(client.table) <= 1  # only the probe in flight, never the ones given up on
    assert sent >= 10 and frozen.backoff == client.balancer.max_backoff
