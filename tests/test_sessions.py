"""The I/O-free core: a client session and a server session joined by an in-memory link, no sockets.

Frames go from one session to the other exactly as a driver would hand them
over; the clock is a number the test moves.
"""
from typing import Any, List, Optional, Tuple

import pytest

from zrpc.core import protocol
from zrpc.core.client_session import END, ERROR, ITEM, RESULT, ClientSession
from zrpc.core.errors import KeywordArgumentsUnsupported, LostRemote, RemoteError
from zrpc.core.methods import MethodTable, stream
from zrpc.core.server_session import CANCEL, CANCELLED_BY_CALLER, CREDIT, QUEUED, SEND, START, ServerSession


class Service:
    def add(self, a: int, b: int = 0) -> int:
        return a + b

    @stream
    def count(self, n: int) -> Any:
        return range(n)


IDENTITY = b"\x00client"


def pair(pool_size: Optional[int] = None, heartbeat: Optional[float] = 5.0,
         window: int = 4) -> Tuple[ClientSession, ServerSession]:
    client = ClientSession(heartbeat=heartbeat, stream_window=window, max_message_size=1 << 20)
    server = ServerSession(MethodTable(Service()), heartbeat=heartbeat, pool_size=pool_size,
                           send_tracebacks=True, stream_generators=False, max_message_size=1 << 20)
    return client, server


def to_server(server: ServerSession, payload: bytes, now: float = 0.0) -> Any:
    return server.receive([IDENTITY, b"", payload], now)


def call(client: ClientSession, method: str, *args: Any, now: float = 0.0, **kwargs: Any) -> Any:
    c, payload = client.request(method, args, kwargs, 10.0, now)
    if not client.balancer.backends:
        client.balancer.add("socket-0", "tcp://server-0")
    client.sent(c, client.balancer.backends[0], now)
    return c, payload


def run(server: ServerSession, action: Any) -> List[bytes]:
    """Do what a driver does with START: resolve and call the method; return the reply payloads."""
    kind, srv_call = action
    assert kind == START
    try:
        name, func, args, kwargs = server.methods.resolve(srv_call.method, srv_call.args)
        srv_call.method = name
        result = func(*args, **kwargs)
    except Exception as exc:
        return [server.error_reply(srv_call, exc)]
    if server.streams(func, False):
        replies = [server.reply(srv_call, protocol.STREAM, item) for item in result]
        return replies + [server.reply(srv_call, protocol.STREAM_DONE, None)]
    return [server.reply(srv_call, protocol.OK, [result])]


def test_a_call_round_trips_through_both_sessions():
    client, server = pair()
    c, payload = call(client, "add", 1, b=2)
    action = to_server(server, payload)
    replies = run(server, action)
    assert server.finished(action[1]) == [] and server.idle
    assert client.receive(replies[0], 0.1) == (RESULT, c, 3)
    assert len(client.table) == 0 and len(server.table) == 0


def test_unknown_method_and_kwargs_refused_by_a_zerorpc_server_map_to_clear_errors():
    client, server = pair()
    c, payload = call(client, "nope")
    kind, _, exc = client.receive(run(server, to_server(server, payload))[0], 0.1)
    assert kind == ERROR and isinstance(exc, RemoteError) and exc.name == "NameError" and exc.msg == "nope"
    # A zerorpc server answers a keyword call with NameError _zrpc_kwcall.
    c, payload = call(client, "add", 1, b=2)
    header, _, _ = protocol.decode(payload)
    err = protocol.encode(protocol.reply_header(b"x", header["message_id"]), protocol.ERR,
                          ["NameError", protocol.KWCALL, ""])
    kind, _, exc = client.receive(err, 0.1)
    assert kind == ERROR and isinstance(exc, KeywordArgumentsUnsupported)


def test_stream_credit_flows_and_bounds_what_the_server_may_send():
    client, server = pair(window=4)
    c, payload = call(client, "count", 10)
    action = to_server(server, payload)
    srv_call = action[1]
    assert srv_call.credit == 1  # the protocol's implicit credit
    first = server.reply(srv_call, protocol.STREAM, 0)
    assert client.receive(first, 0.1) == (ITEM, c, 0)
    c.window.taken()
    amount, more = client.grant(c)
    assert amount == 4
    c.window.sent(amount)
    kind, granted = to_server(server, more)
    assert kind == CREDIT and granted is srv_call and srv_call.credit == 5
    # A server that ignores credit is caught: 4 granted, a 5th arrives.
    for i in range(4):
        assert client.receive(server.reply(srv_call, protocol.STREAM, i + 1), 0.2)[0] == ITEM
    kind, _, exc = client.receive(server.reply(srv_call, protocol.STREAM, 99), 0.3)
    assert kind == ERROR and "more stream items than it was granted" in str(exc)


def test_stream_end_finishes_the_call():
    client, server = pair()
    c, payload = call(client, "count", 0)
    replies = run(server, to_server(server, payload))
    assert client.receive(replies[-1], 0.1) == (END, c, None)
    assert not client.in_flight(c)


def test_pool_queues_beyond_pool_size_and_hands_out_in_order():
    client, server = pair(pool_size=1)
    first = to_server(server, call(client, "add", 1)[1])
    assert first[0] == START
    queued = [to_server(server, call(client, "add", i)[1]) for i in range(3)]
    assert [a[0] for a in queued] == [QUEUED] * 3 and server.calls_in_flight == 4
    nxt = server.finished(first[1])
    assert len(nxt) == 1 and nxt[0].args == [0] and server.calls_in_flight == 3
    # A queued call cancelled by its caller is skipped, never started.
    victim = server._backlog[0]
    interrupt, answer = server.cancel(victim, CANCELLED_BY_CALLER)
    assert not interrupt and answer is None and server.calls_in_flight == 2
    nxt = server.finished(nxt[0])
    assert [c.args for c in nxt] == [[2]]


def test_stopping_server_refuses_new_calls_with_server_stopping():
    client, server = pair()
    server.stopping = True
    c, payload = call(client, "add", 1)
    kind, frames = to_server(server, payload)
    assert kind == SEND and frames[0] == IDENTITY
    kind, _, exc = client.receive(frames[-1], 0.1)
    assert kind == ERROR and exc.name == "ServerStopping"


def test_bad_request_with_a_readable_id_is_answered_with_protocol_error():
    _, server = pair()
    payload = protocol.encode({"message_id": b"m1", "v": 3}, 42, [])  # name must be a str
    kind, frames = to_server(server, payload)
    assert kind == SEND
    header, name, args = protocol.decode(frames[-1])
    assert header["response_to"] == b"m1" and name == protocol.ERR and args[0] == "ProtocolError"


def test_cancel_from_the_caller_reaches_the_running_call():
    client, server = pair()
    c, payload = call(client, "add", 1)
    action = to_server(server, payload)
    srv_call = action[1]
    srv_call.task, srv_call.running = object(), True  # what a driver sets when the task starts
    _, cancel = client.expire(c)
    kind, target, why = to_server(server, cancel)
    assert kind == CANCEL and target is srv_call
    assert server.cancel(srv_call, why) == (True, None)
    assert server.cancel(srv_call, why) == (False, None)  # twice: nothing more


def test_heartbeats_are_due_after_an_interval_and_silence_is_loss():
    client, server = pair(heartbeat=1.0)
    c, payload = call(client, "add", 1, now=0.0)
    assert client.heartbeats(0.5) == ([], [])  # younger than one interval: no ping
    pings, lost = client.heartbeats(1.0)
    assert [ch for ch, _ in pings] == [c] and lost == []
    client.pinged(c, 1.0)
    assert protocol.decode(pings[0][1])[1] == protocol.HEARTBEAT
    pings, lost = client.heartbeats(3.1)  # the server said nothing for 2 intervals after our ping
    assert lost == [c] and not client.in_flight(c)
    assert isinstance(client.lost(c), LostRemote)


def test_trace_sees_every_event_both_ways():
    seen: List[Tuple[str, str]] = []
    client = ClientSession(heartbeat=None, stream_window=4, max_message_size=None,
                           trace=lambda d, h, n, a: seen.append((d, n)))
    server = ServerSession(MethodTable(Service()), heartbeat=None, pool_size=None, send_tracebacks=True,
                           stream_generators=False, max_message_size=None,
                           trace=lambda d, h, n, a: seen.append((d, n)))
    c, payload = call(client, "add", 1)
    client.receive(run(server, to_server(server, payload))[0], 0.1)
    assert seen == [("send", "add"), ("recv", "add"), ("send", "OK"), ("recv", "OK")]


def test_pool_size_must_be_positive():
    with pytest.raises(ValueError):
        pair(pool_size=0)
