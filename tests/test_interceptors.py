"""Interceptors on both sides, the call context and request headers, over real sockets (gevent and asyncio)."""
import asyncio
import time

import gevent
import pytest
from gevent.event import Event

import zrpc
import zrpc.aio

from conftest import wait_until
from test_aio import until


class Service:
    def __init__(self):
        self.stream_closed = Event()

    def add(self, a, b):
        return a + b

    def context(self):
        call = zrpc.current_call()
        return {"method": call.method, "headers": dict(call.headers), "peer": call.peer_address,
                "remaining": call.remaining(), "has_deadline": call.deadline is not None}

    def boom(self):
        raise ValueError("boom")

    def in_spawned_greenlet(self):
        found = []

        def look():
            try:
                zrpc.current_call()
                found.append("found")
            except LookupError:
                found.append("LookupError")

        gevent.spawn(look).join(5)
        return found

    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    @zrpc.stream
    def count(self, n):
        return iter(range(n))

    @zrpc.stream
    def endless(self):
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            self.stream_closed.set()

    @zrpc.stream
    def fail_after(self, n):
        yield from range(n)
        raise KeyError("stream broke")


class Recorder:
    """A server interceptor that records what it saw and every call's outcome."""

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.done = []
        self.finished = Event()

    def __call__(self, call, proceed):
        self.log.append(("enter", self.name, call.method))
        call.add_done_callback(self._over)
        try:
            return proceed()
        finally:
            self.log.append(("leave", self.name, call.method))

    def _over(self, call):
        self.done.append((call.method, call.outcome, type(call.error).__name__ if call.error else None,
                          call.stream, call.request_bytes, call.reply_bytes, call.duration))
        self.finished.set()


def test_server_interceptors_wrap_the_method_outermost_first(serve, client_factory):
    log = []
    outer, inner = Recorder("outer", log), Recorder("inner", log)
    client = client_factory(serve(Service(), interceptors=[outer, inner]), timeout=10)
    assert client.add(1, 2) == 3
    assert log == [("enter", "outer", "add"), ("enter", "inner", "add"),
                   ("leave", "inner", "add"), ("leave", "outer", "add")]
    assert wait_until(lambda: outer.done and inner.done)
    method, outcome, error, stream, request_bytes, reply_bytes, duration = outer.done[0]
    assert (method, outcome, error, stream) == ("add", "ok", None, False)
    assert request_bytes > 20 and reply_bytes > 20 and 0 <= duration < 5


def test_an_interceptor_rejects_a_call_with_the_callers_remote_error(serve, client_factory):
    ran = []

    def deny(call, proceed):
        if call.method == "add" and call.args[0] < 0:
            raise PermissionError(f"negative numbers are not allowed for {call.method}")
        ran.append(call.method)
        return proceed()

    client = client_factory(serve(Service(), interceptors=[deny]), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.add(-1, 2)
    assert info.value.name == "PermissionError"
    assert "negative numbers" in info.value.msg
    assert "deny" in info.value.traceback  # the traceback of the interceptor, as for a method
    assert client.add(1, 2) == 3 and ran == ["add"]


def test_an_interceptor_may_change_args_and_result(serve, client_factory):
    def double_args(call, proceed):
        call.args = tuple(a * 2 for a in call.args)
        return proceed()

    def tag_result(call, proceed):
        return {"result": proceed(), "method": call.method}

    client = client_factory(serve(Service(), interceptors=[tag_result, double_args]), timeout=10)
    assert client.add(1, 2) == {"result": 6, "method": "add"}
    assert client.call("add", a=1, b=2) == {"result": 3, "method": "add"}  # kwargs untouched


def test_stream_outcomes_reach_interceptors(serve, client_factory):
    log = []
    service = Service()
    recorder = Recorder("r", log)
    client = client_factory(serve(service, interceptors=[recorder]), timeout=10)

    assert list(client.count(5)) == [0, 1, 2, 3, 4]
    assert wait_until(lambda: len(recorder.done) == 1)
    assert recorder.done[0][:4] == ("count", "ok", None, True)
    assert recorder.done[0][5] > 5 * 3  # every item's bytes

    items = []
    with pytest.raises(zrpc.RemoteError):
        for item in client.fail_after(2):
            items.append(item)
    assert items == [0, 1]
    assert wait_until(lambda: len(recorder.done) == 2)
    assert recorder.done[1][:4] == ("fail_after", "error", "KeyError", True)

    stream = client.endless()
    assert next(stream) == 0
    stream.close()  # early: the server's generator is stopped and the interceptor told
    assert service.stream_closed.wait(10)
    assert wait_until(lambda: len(recorder.done) == 3)
    assert recorder.done[2][:4] == ("endless", "cancelled", "_Cancelled", True)


def test_done_callback_sees_errors_and_cancellation(serve, client_factory):
    log = []
    recorder = Recorder("r", log)
    client = client_factory(serve(Service(), interceptors=[recorder]), timeout=10)
    with pytest.raises(zrpc.RemoteError):
        client.boom()
    with pytest.raises(zrpc.TimeoutExpired):
        client.with_options(timeout=0.2).sleep(30)
    assert wait_until(lambda: len(recorder.done) == 2)
    assert recorder.done[0][:3] == ("boom", "error", "ValueError")
    assert recorder.done[1][:2] == ("sleep", "cancelled")


def test_current_call_gives_method_peer_headers_and_deadline(serve, client_factory):
    client = client_factory(serve(Service()), timeout=10, headers={"tenant": "acme"})
    seen = client.with_options(headers={"request_no": 7}).context()
    assert seen["method"] == "context"
    assert seen["headers"] == {"tenant": "acme", "request_no": 7}  # zrpc_timeout is not a user header
    assert seen["peer"] == "127.0.0.1"
    assert seen["has_deadline"] and 8 < seen["remaining"] <= 10
    assert client.with_options(timeout=None).context()["has_deadline"] is False


def test_current_call_is_not_inherited_by_greenlets_the_method_spawns(serve, client_factory):
    client = client_factory(serve(Service()), timeout=10)
    assert client.in_spawned_greenlet() == ["LookupError"]


def test_unknown_methods_are_answered_before_the_interceptors(serve, client_factory):
    log = []
    client = client_factory(serve(Service(), interceptors=[Recorder("r", log)]), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.call("no_such_method")
    assert info.value.name == "NameError" and log == []


def test_client_outcomes_closed_and_lost(serve, client_factory):
    outcomes = []

    def watch(call, proceed):
        call.add_done_callback(lambda c: outcomes.append((c.method, c.outcome, type(c.error).__name__)))
        return proceed()

    client = client_factory(serve(Service()), timeout=10, interceptors=[watch])
    future = client.sleep.call_async(30)
    gevent.sleep(0.1)
    client.close()
    with pytest.raises(zrpc.ClosedError):
        future.get(5)
    assert wait_until(lambda: outcomes == [("sleep", "closed", "ClosedError")])
    with pytest.raises(zrpc.ClosedError):  # nothing could be sent: the outcome is known at once
        client.add(1, 2)
    assert outcomes[-1] == ("add", "closed", "ClosedError")


def test_current_call_outside_any_call_raises_lookup_error():
    with pytest.raises(LookupError):
        zrpc.current_call()


@pytest.mark.parametrize("headers, error", [
    ({"message_id": "x"}, ValueError),
    ({"v": 2}, ValueError),
    ({"response_to": "x"}, ValueError),
    ({"zrpc_timeout": 1}, ValueError),
    ({"tenant": [1, 2]}, TypeError),
    ({"tenant": {"a": 1}}, TypeError),
    ({1: "x"}, TypeError),
    ({"big": "x" * 9000}, ValueError),
])
def test_bad_headers_are_refused_before_anything_is_sent(serve, client_factory, headers, error):
    client = client_factory(serve(Service()), timeout=10)
    with pytest.raises(error):
        client.with_options(headers=headers)
    with pytest.raises(error):
        client_factory(serve(Service()), headers=headers)


def test_client_interceptors_add_headers_and_observe_outcomes(serve, client_factory):
    outcomes = []

    def add_tenant(call, proceed):
        call.headers["tenant"] = "from-interceptor"
        call.add_done_callback(lambda c: outcomes.append((c.method, c.outcome, c.async_, c.result)))
        return proceed()

    def map_errors(call, proceed):
        try:
            return proceed()
        except zrpc.RemoteError as exc:
            raise LookupError(f"mapped {exc.name}") from exc

    endpoint = serve(Service())
    client = client_factory(endpoint, timeout=10, interceptors=[add_tenant, map_errors])
    assert client.context()["headers"] == {"tenant": "from-interceptor"}
    with pytest.raises(LookupError, match="mapped ValueError"):
        client.boom()
    assert client.add.call_async(2, 3).get(10) == 5
    batch = client.batch()
    batch.add(1, 1)
    assert batch.run() == [2]
    with pytest.raises(zrpc.TimeoutExpired):
        client.with_options(timeout=0.2).sleep(10)
    assert wait_until(lambda: len(outcomes) == 5)
    assert outcomes[0][:3] == ("context", "ok", False)
    assert outcomes[1][:3] == ("boom", "error", False)
    assert outcomes[2] == ("add", "ok", True, 5)
    assert outcomes[3] == ("add", "ok", True, 2)
    assert outcomes[4][:2] == ("sleep", "timeout")


def test_done_callbacks_see_the_outcome_of_the_whole_chain_not_of_the_first_attempt(serve, client_factory):
    outcomes = []
    attempts = []

    def observe(call, proceed):
        call.add_done_callback(lambda c: outcomes.append((c.method, c.outcome, c.result)))
        return proceed()

    def retry_once(call, proceed):  # a retrying interceptor: the caller sees only the second attempt
        try:
            attempts.append(call.method)
            return proceed()
        except zrpc.RemoteError:
            call.method = "add"
            return proceed()

    endpoint = serve(Service())
    client = client_factory(endpoint, timeout=10, interceptors=[observe, retry_once])
    assert client.boom(1, 2) == 3  # boom raises; the retry calls add(1, 2)
    assert wait_until(lambda: len(outcomes) == 1)
    assert outcomes == [("add", "ok", 3)] and attempts == ["boom"]


def test_a_client_interceptor_adding_a_reserved_header_fails_the_call(serve, client_factory):
    def sneaky(call, proceed):
        call.headers["zrpc_timeout"] = 1000
        return proceed()

    client = client_factory(serve(Service()), timeout=10, interceptors=[sneaky])
    with pytest.raises(ValueError, match="reserved"):
        client.add(1, 2)


# -- asyncio ---------------------------------------------------------------------------
class AioService:
    async def add(self, a, b):
        return a + b

    def mul(self, a, b):  # a plain function: runs in the server's threads
        return a * b

    async def context(self):
        call = zrpc.current_call()
        return {"method": call.method, "headers": dict(call.headers), "remaining": call.remaining()}

    async def div(self, a, b):
        return a / b

    async def boom(self):
        raise ValueError("boom")

    async def in_task(self):
        async def look():
            return zrpc.current_call().method

        return await asyncio.create_task(look())  # a task inherits the call's context

    async def nap(self, seconds):
        await asyncio.sleep(seconds)

    def in_thread(self):
        return zrpc.current_call().method  # a plain function runs in a thread, with the context

    async def count(self, n):
        for i in range(n):
            yield i


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_aio_server_and_client_interceptors_plain_and_async():
    async def main():
        log = []

        def plain(call, proceed):
            log.append(("plain", call.method))
            call.add_done_callback(lambda c: log.append(("done", c.method, c.outcome, c.stream)))
            return proceed()

        async def timed(call, proceed):
            started = time.monotonic()
            result = await proceed()
            log.append(("timed", call.method, time.monotonic() - started >= 0))
            return result

        def deny(call, proceed):
            if call.method == "mul" and call.args == (0, 0):
                raise PermissionError("no zeros")
            return proceed()

        client_log = []

        async def client_side(call, proceed):
            call.headers["tenant"] = "aio"
            call.add_done_callback(lambda c: client_log.append((c.method, c.outcome)))
            try:
                return await proceed()
            except zrpc.RemoteError as exc:
                if exc.name != "ZeroDivisionError":
                    raise
                call.args = (1, 1)  # retried: its done callback sees the retry's outcome
                return await proceed()

        server = zrpc.aio.Server(AioService(), interceptors=[plain, timed, deny])
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        client = zrpc.aio.Client(endpoint, timeout=10, interceptors=[client_side])
        try:
            assert await client.add(1, 2) == 3
            assert await client.mul(2, 3) == 6
            context = await client.context()
            assert context["headers"] == {"tenant": "aio"} and 8 < context["remaining"] <= 10
            with pytest.raises(zrpc.RemoteError) as info:
                await client.mul(0, 0)
            assert info.value.name == "PermissionError"
            assert [item async for item in client.count(3)] == [0, 1, 2]
            assert await client.add.call_async(5, 5) == 10
            assert await client.div(1, 0) == 1.0
            assert await client.in_task() == "in_task"
            assert await client.in_thread() == "in_thread"
            cancelled = asyncio.ensure_future(client.nap(30))
            assert await until(lambda: server.calls_in_flight == 1)
            cancelled.cancel()
            assert await until(lambda: ("nap", "cancelled") in client_log)
            assert await until(lambda: ("done", "nap", "cancelled", False) in log)
            assert await until(lambda: ("done", "count", "ok", True) in log)
        finally:
            await client.close()
            await server.close()
        assert ("timed", "add", True) in log and ("done", "add", "ok", False) in log
        assert ("done", "mul", "error", False) in log
        assert ("add", "ok") in client_log and ("mul", "error") in client_log
        assert ("div", "ok") in client_log and ("div", "error") not in client_log

    run(main())
