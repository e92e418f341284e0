"""Deadlines on the wire: ``zrpc_timeout`` sent, exposed, enforced by the server, propagated; and
zerorpc 0.6.3 (in its own processes) ignoring it and the user headers both ways."""
import json
import time

import gevent
import msgpack
import pytest

import zrpc
from zrpc.core.server_session import DEADLINE_TICK

from conftest import wait_until
from test_interop_zerorpc import HB, run_zerorpc_client, value_of, zerorpc_server  # noqa: F401 (fixture)


def pack(header, name, args):
    return msgpack.packb([header, name, args], use_bin_type=True)


def recv_event(sock, timeout=5.0):
    with gevent.Timeout(timeout):
        frames = sock.recv_multipart()
    return msgpack.unpackb(frames[-1], raw=False)


class Service:
    def __init__(self):
        self.stopped = []
        self.remaining = []

    def sleep(self, seconds):
        self.remaining.append(zrpc.current_call().remaining())
        try:
            gevent.sleep(seconds)
        except gevent.GreenletExit:
            self.stopped.append(time.monotonic())
            raise
        return seconds

    def remaining_now(self):
        return zrpc.current_call().remaining()

    def headers_seen(self):
        call = zrpc.current_call()
        return {"headers": dict(call.headers), "deadline": call.deadline}

    def add(self, a, b):
        return a + b


@pytest.mark.parametrize("heartbeat", [None, 5.0])
def test_the_server_cancels_a_call_past_its_deadline_without_any_cancel_event(serve, raw_dealer, heartbeat):
    service = Service()
    sock = raw_dealer(serve(service, heartbeat=heartbeat))
    started = time.monotonic()
    # A caller that says it waits 0.5 s, then goes silent: no cancel, no heartbeat.
    sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3, "zrpc_timeout": 0.5}, "sleep", [30])])
    header, name, args = recv_event(sock, timeout=5)
    late = time.monotonic() - started
    assert name == "ERR" and args[0] == "DeadlineExceeded", args
    assert header["response_to"] == b"m1"
    assert 0.5 <= late < 0.5 + DEADLINE_TICK + 1.0  # the lateness bound: one sweep, plus scheduling
    assert wait_until(lambda: service.stopped, timeout=2)
    assert 0.4 < service.remaining[0] <= 0.5
    assert serve.servers[-1].calls_in_flight == 0


def test_a_queued_call_past_its_deadline_is_answered_and_never_runs(serve, raw_dealer):
    service = Service()
    sock = raw_dealer(serve(service, heartbeat=None, pool_size=1))
    sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3}, "sleep", [1.5])])
    sock.send_multipart([b"", pack({"message_id": b"m2", "v": 3, "zrpc_timeout": 0.3}, "sleep", [0])])
    header, name, args = recv_event(sock)
    assert (header["response_to"], name, args[0]) == (b"m2", "ERR", "DeadlineExceeded")
    header, name, args = recv_event(sock)
    assert (header["response_to"], name, args) == (b"m1", "OK", [1.5])
    assert len(service.remaining) == 1  # m2 never ran


def test_a_bad_or_missing_timeout_header_means_no_deadline(serve, raw_dealer):
    sock = raw_dealer(serve(Service(), heartbeat=None))
    for n, value in enumerate(["soon", [1], None, True]):
        sock.send_multipart([b"", pack({"message_id": b"m%d" % n, "v": 3, "zrpc_timeout": value},
                                       "headers_seen", [])])
        header, name, args = recv_event(sock)
        assert name == "OK" and args[0] == {"headers": {}, "deadline": None}, (value, args)


def test_zrpc_clients_send_their_timeout_and_the_server_exposes_it(serve, client_factory):
    client = client_factory(serve(Service()), timeout=4)
    assert 3 < client.remaining_now() <= 4
    assert client.with_options(timeout=None).remaining_now() is None


def test_a_call_made_inside_a_call_inherits_what_remains_of_its_deadline(serve, client_factory):
    inner = Service()
    inner_endpoint = serve(inner)
    downstream = client_factory(inner_endpoint, timeout=30)  # its own timeout is longer
    independent = client_factory(inner_endpoint, timeout=30, inherit_deadline=False)

    class Front:
        def relay_remaining(self):
            return [zrpc.current_call().remaining(), downstream.remaining_now(), independent.remaining_now()]

        def relay_sleep(self, seconds):
            return downstream.sleep(seconds)

    front = client_factory(serve(Front()), timeout=2)
    outer, inherited, own = front.relay_remaining()
    assert 1.5 < inherited <= outer <= 2
    assert 29 < own <= 30
    started = time.monotonic()
    with pytest.raises(zrpc.TimeoutExpired):
        front.relay_sleep(10)
    assert time.monotonic() - started < 2.5
    # The inner server was told the outer deadline, and stopped the work when it passed.
    assert 1.5 < inner.remaining[-1] < 2
    assert wait_until(lambda: inner.stopped, timeout=1 + DEADLINE_TICK)
    assert inner.stopped[0] - started < 2 + DEADLINE_TICK + 0.5


# -- zerorpc 0.6.3 peers ignore the new header keys, both ways --------------------------
def test_a_zerorpc_server_ignores_the_timeout_and_user_headers(zerorpc_server, client_factory):  # noqa: F811
    endpoint, _ = zerorpc_server()
    client = client_factory(endpoint, timeout=10, heartbeat=HB, headers={"tenant": "acme"})
    assert client.add(1, 2) == 3
    assert client.with_options(headers={"request_no": 7}).echo("x") == "x"
    seen = client.seen()
    requests = {tuple(keys) for name, keys, *_ in seen if name in ("add", "echo")}
    assert ("message_id", "tenant", "v", "zrpc_timeout") in requests
    assert ("message_id", "request_no", "tenant", "v", "zrpc_timeout") in requests


def test_a_zerorpc_clients_middleware_context_shows_up_as_headers(serve):
    endpoint = serve(Service(), heartbeat=HB)
    checks = run_zerorpc_client(endpoint, "middleware_headers")
    assert value_of(checks["headers"]) == {"headers": {"tenant": "acme", "request_no": 7}, "deadline": None}
    assert value_of(checks["add"]) == 3


def test_aio_a_task_outliving_its_call_does_not_inherit_the_passed_deadline():
    import asyncio

    import zrpc.aio

    async def main():
        later = asyncio.get_running_loop().create_future()

        class Back:
            async def add(self, a, b):
                return a + b

        back = zrpc.aio.Server(Back())
        back_endpoint = back.bind("tcp://127.0.0.1:*")
        back.start()
        downstream = zrpc.aio.Client(back_endpoint, timeout=10)

        class Front:
            async def start_background(self):
                async def afterwards():
                    await asyncio.sleep(0.5)  # the call (deadline 0.3 s) is long over
                    try:
                        later.set_result(await downstream.add(1, 2))
                    except Exception as exc:
                        later.set_result(repr(exc))

                asyncio.get_running_loop().create_task(afterwards())  # inherits the call's context
                return "started"

        front = zrpc.aio.Server(Front())
        endpoint = front.bind("tcp://127.0.0.1:*")
        front.start()
        client = zrpc.aio.Client(endpoint, timeout=0.3)
        try:
            assert await client.start_background() == "started"
            assert await asyncio.wait_for(later, 10) == 3
        finally:
            await client.close()
            await downstream.close()
            await front.close()
            await back.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_aio_server_cancels_a_call_past_its_deadline_without_any_cancel_event():
    import asyncio

    import zmq.asyncio

    import zrpc.aio

    async def main():
        stopped = []

        class Slow:
            async def nap(self, seconds):
                try:
                    await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    stopped.append(time.monotonic())
                    raise

        server = zrpc.aio.Server(Slow(), heartbeat=None)
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        context = zmq.asyncio.Context()
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        try:
            started = time.monotonic()
            await sock.send_multipart([b"", pack({"message_id": b"m1", "v": 3, "zrpc_timeout": 0.4}, "nap", [30])])
            frames = await asyncio.wait_for(sock.recv_multipart(), 5)
            header, name, args = msgpack.unpackb(frames[-1], raw=False)
            assert name == "ERR" and args[0] == "DeadlineExceeded", args
            assert 0.4 <= time.monotonic() - started < 0.4 + DEADLINE_TICK + 1.0
            assert stopped and server.calls_in_flight == 0
        finally:
            sock.close()
            context.term()
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 60))
