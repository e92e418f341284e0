"""Heartbeats and hostile input, seen from raw ZeroMQ peers that speak (or mangle) the wire format."""
import logging
import time

import gevent
import msgpack
import pytest
import zmq.green as zmq

import zrpc
from zrpc.core import protocol

from conftest import wait_until


def pack(header, name, args):
    return msgpack.packb([header, name, args], use_bin_type=True)


def unpack(frame):
    return msgpack.unpackb(frame, raw=False)


def recv_event(sock, timeout=5.0):
    with gevent.Timeout(timeout):
        frames = sock.recv_multipart()
    return unpack(frames[-1])


def events_until(sock, name, timeout=10.0):
    """Receive events until one named `name` (bounded in time); return all of them."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = recv_event(sock, deadline - time.monotonic())
        seen.append(event)
        if event[1] == name:
            return seen
    raise AssertionError(f"no {name} within {timeout}s: {seen}")


class Service:
    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def echo(self, value):
        return value


# -- heartbeats ---------------------------------------------------------------

def test_server_sends_no_heartbeat_for_a_call_shorter_than_one_interval(serve, raw_dealer):
    sock = raw_dealer(serve(Service(), heartbeat=0.5))
    sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3}, "sleep", [0.3])])
    events = events_until(sock, "OK")
    assert [e[1] for e in events] == ["OK"]


def test_server_heartbeats_a_long_call_and_the_call_survives_a_talking_client(serve, raw_dealer):
    sock = raw_dealer(serve(Service(), heartbeat=0.2))
    sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3}, "sleep", [1.0])])
    beats = 0

    def client_heartbeats():
        for n in range(20):
            gevent.sleep(0.2)
            sock.send_multipart([b"", pack({"message_id": b"hb%d" % n, "v": 3, "response_to": b"m1"},
                                           "_zpc_hb", [0])])

    talker = gevent.spawn(client_heartbeats)
    try:
        events = events_until(sock, "OK")
    finally:
        talker.kill()
    beats = sum(1 for e in events if e[1] == "_zpc_hb")
    assert 2 <= beats <= 10
    assert all(e[0]["response_to"] == b"m1" for e in events)
    assert events[-1][2] == [1.0]


def test_server_cancels_the_work_of_a_silent_client(client_factory, raw_dealer, caplog):
    stopped = []

    def forever():
        try:
            gevent.sleep(30)
        finally:
            stopped.append(time.monotonic())

    server = zrpc.Server({"forever": forever}, heartbeat=0.2)
    try:
        sock = raw_dealer(server.bind("tcp://127.0.0.1:*"))
        server.start()
        with caplog.at_level(logging.WARNING, logger="zrpc"):
            started = time.monotonic()
            sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3}, "forever", [])])
            # This client never sends a heartbeat: after two intervals it is lost.
            assert wait_until(lambda: stopped, timeout=5)
        assert 0.3 < stopped[0] - started < 2.0
        assert server.calls_in_flight == 0
        assert any("lost the caller of forever()" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


def test_client_sends_no_heartbeat_for_a_short_call_and_some_for_a_long_one(client_factory):
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    endpoint = "tcp://127.0.0.1:%d" % router.bind_to_random_port("tcp://127.0.0.1")
    received = []

    def fake_server(reply_after):
        frames = router.recv_multipart()
        header, name, args = unpack(frames[-1])
        received.append(name)
        deadline = time.monotonic() + reply_after
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                with gevent.Timeout(min(remaining, 0.1)):
                    more = router.recv_multipart()
                received.append(unpack(more[-1])[1])
            except gevent.Timeout:
                pass
            # answer like a live server: heartbeat back
            router.send_multipart(frames[:-1] + [pack({"message_id": b"s", "v": 3,
                                                       "response_to": header["message_id"]},
                                                      "_zpc_hb", [0])])
        router.send_multipart(frames[:-1] + [pack({"message_id": b"r", "v": 3,
                                                   "response_to": header["message_id"]}, "OK", [name])])

    try:
        client = client_factory(endpoint, timeout=10, heartbeat=0.5)
        task = gevent.spawn(fake_server, 0.2)
        assert client.echo(1) == "echo"
        task.get(timeout=5)
        assert received == ["echo"]  # no _zpc_hb for a call shorter than one interval

        received.clear()
        task = gevent.spawn(fake_server, 1.6)
        assert client.echo(1) == "echo"
        task.get(timeout=5)
        assert received[0] == "echo" and 1 <= received.count("_zpc_hb") <= 4
    finally:
        router.close()


def test_no_heartbeats_at_all_when_disabled(serve, raw_dealer):
    sock = raw_dealer(serve(Service(), heartbeat=None))
    sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3}, "sleep", [0.6])])
    assert [e[1] for e in events_until(sock, "OK")] == ["OK"]


# -- bad input ---------------------------------------------------------------------

BAD_WITH_ID = [
    ("name is not a string", pack({"message_id": b"b1", "v": 3}, 42, [])),
    ("args is not an array", pack({"message_id": b"b2", "v": 3}, "echo", {"x": 1})),
    ("wrong arity", msgpack.packb([{"message_id": b"b3", "v": 3}, "echo"])),
    ("bad keyword call", pack({"message_id": b"b4", "v": 3}, protocol.KWCALL, ["echo", "notalist", {}])),
    ("wrong argument count", pack({"message_id": b"b5", "v": 3}, "echo", [1, 2, 3])),
]


@pytest.mark.parametrize("what, payload", BAD_WITH_ID, ids=[w for w, _ in BAD_WITH_ID])
def test_bad_requests_with_a_readable_id_get_an_err_and_the_server_goes_on(serve, raw_dealer, client_factory,
                                                                            caplog, what, payload):
    endpoint = serve(Service())
    sock = raw_dealer(endpoint)
    with caplog.at_level(logging.WARNING, logger="zrpc"):
        sock.send_multipart([b"", payload])
        header, name, args = recv_event(sock)
    assert name == "ERR" and len(args) == 3 and header["response_to"].startswith(b"b")
    assert args[0] in ("ProtocolError", "TypeError")
    assert caplog.records, "the server logs a line for bad input"
    assert client_factory(endpoint, timeout=5).echo("alive") == "alive"


GARBAGE = [
    ("not msgpack", [b"", b"\xc1\xc1\xc1"]),
    # Cut inside the header: no id to answer (cut after it, it gets an ERR: tests/test_hostile.py).
    ("truncated msgpack", [b"", pack({"message_id": b"t", "v": 3}, "echo", [b"x" * 100])[:8]]),
    ("empty payload", [b"", b""]),
    ("not an array", [b"", msgpack.packb({"hello": "world"})]),
    ("header not a map", [b"", msgpack.packb([1, "echo", []])]),
    ("message id of a wrong type", [b"", msgpack.packb([{"message_id": 3.5}, "echo", []])]),
    ("many frames", [b"a", b"b", b"c", b"\x00"]),
    ("control event with no channel", [b"", pack({"message_id": b"c", "v": 3}, "_zpc_hb", [0])]),
    ("reply to an unknown channel", [b"", pack({"message_id": b"c", "v": 3, "response_to": b"zz"}, "_zpc_more", [5])]),
]


@pytest.mark.parametrize("what, frames", GARBAGE, ids=[w for w, _ in GARBAGE])
def test_garbage_is_logged_and_dropped_and_the_server_goes_on(serve, raw_dealer, client_factory, what, frames):
    endpoint = serve(Service())
    sock = raw_dealer(endpoint)
    for _ in range(3):
        sock.send_multipart(frames)
    # The same connection still works afterwards, and so do other clients.
    sock.send_multipart([b"", pack({"message_id": b"ok", "v": 3}, "echo", ["fine"])])
    header, name, args = recv_event(sock)
    assert (name, args, header["response_to"]) == ("OK", ["fine"], b"ok")
    assert client_factory(endpoint, timeout=5).echo("alive") == "alive"


def test_huge_message_gets_a_clear_error_and_the_server_goes_on(serve, client_factory, caplog):
    endpoint = serve(Service(), max_message_size=1 << 20)
    client = client_factory(endpoint, timeout=10)
    with caplog.at_level(logging.WARNING, logger="zrpc"):
        with pytest.raises(zrpc.RemoteError) as info:
            client.echo(b"x" * (2 << 20))
    assert info.value.name == "ProtocolError" and "exceeds the limit" in info.value.msg
    assert any("exceeds the limit" in r.getMessage() for r in caplog.records)
    assert client.echo(b"y" * (512 << 10)) == b"y" * (512 << 10)


def test_a_reply_the_client_cannot_decode_fails_that_call_not_others(client_factory):
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.linger = 0
    endpoint = "tcp://127.0.0.1:%d" % router.bind_to_random_port("tcp://127.0.0.1")

    def bad_server():
        for _ in range(2):
            frames = router.recv_multipart()
            header, name, args = unpack(frames[-1])
            if name == "bad":  # a reply with a readable header but a non-string name
                reply = pack({"message_id": b"r", "v": 3, "response_to": header["message_id"]}, 7, [])
            else:
                reply = pack({"message_id": b"r", "v": 3, "response_to": header["message_id"]}, "OK", [1])
            router.send_multipart(frames[:-1] + [reply])

    try:
        task = gevent.spawn(bad_server)
        client = client_factory(endpoint, timeout=5)
        with pytest.raises(zrpc.ProtocolError, match="name must be a str"):
            client.bad()
        assert client.good() == 1
        task.get(timeout=5)
    finally:
        router.close()
