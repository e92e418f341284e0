"""zrpc.aio: the asyncio Client and Server, in process and against real peers in other processes.

Each test runs its own asyncio loop (``run``), bounded in time. Peers in
other processes: tests/peers/aio_server.py (an asyncio server with gevent
made unimportable), zrpc_server.py (the gevent server), zerorpc_server.py
(zerorpc 0.6.3), tests/node/zerorpc_server.js (zerorpc-node).
"""
import asyncio
import gc
import json
import os
import sys
import time

import pytest

import zrpc
import zrpc.aio

from conftest import PEERS, free_tcp_endpoint, run_python, spawn_peer, stop_peer


def run(coro, timeout: float = 60):
    """Run ``coro`` on a fresh asyncio loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout: float = 10.0) -> bool:
    """Poll predicate on the loop until true or ``timeout``; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


class Service:
    def __init__(self):
        self.cancelled = asyncio.Event()
        self.stream_closed = asyncio.Event()
        self.threads = set()

    async def add(self, a, b):
        return a + b

    def mul(self, a, b):
        import threading

        self.threads.add(threading.current_thread().name)
        return a * b

    def block(self, seconds):
        time.sleep(seconds)  # a blocking function: must not freeze the loop
        return seconds

    async def search(self, first, *, last="", limit=10):
        return [first, last, limit]

    async def boom(self):
        raise ValueError("boom")

    async def wait(self, seconds):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return seconds

    async def count(self, n):
        try:
            for i in range(n):
                yield i
        finally:
            self.stream_closed.set()

    @zrpc.stream
    def plain_count(self, n):
        return iter(range(n))

    def who(self):
        info = zrpc.aio.current_call()
        return [info.method, info.peer_address]


async def serving(service, endpoint="tcp://127.0.0.1:*", **kwargs):
    server = zrpc.aio.Server(service, **kwargs)
    bound = server.bind(endpoint)
    server.start()
    return server, bound


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_calls_keywords_errors_batches_and_options(transport, tmp_path):
    endpoint = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path}/s"

    async def main():
        service = Service()
        server, bound = await serving(service, endpoint)
        async with server, zrpc.aio.Client(bound, timeout=10) as client:
            assert await client.add(1, 2) == 3
            assert await client.call("add", 2, 3) == 5
            assert await client.mul(3, 4) == 12
            assert any(name.startswith("zrpc-aio") for name in service.threads)  # a plain function: in a thread
            assert await client.search("a", limit=3) == ["a", "", 3]
            assert await client._zerorpc_ping() == ["pong", "Service"]
            method, address = await client.who()
            assert method == "who" and (address == "127.0.0.1" or transport == "ipc")
            with pytest.raises(zrpc.RemoteError) as err:
                await client.boom()
            assert (err.value.name, err.value.msg) == ("ValueError", "boom")
            with pytest.raises(zrpc.RemoteError) as err:
                await client.nope()
            assert err.value.name == "NameError"
            with pytest.raises(zrpc.TimeoutExpired):
                await client.with_options(timeout=0.2).wait(5)
            assert await client.with_options(timeout=None).add(1, 1) == 2
            batch = client.batch()
            assert [batch.add(1, 1), batch.boom(), batch.call("mul", 2, 5)] == [0, 1, 2]
            results = await batch.run()
            assert results[0] == 2 and isinstance(results[1], zrpc.RemoteError) and results[2] == 10
            assert await client.call_async("add", 5, 5) == 10
        assert server.closed and client.closed

    run(main())


def test_gather_of_thousands_of_calls_on_one_client():
    async def main():
        server, bound = await serving(Service())
        async with server, zrpc.aio.Client(bound, timeout=30) as client:
            results = await asyncio.gather(*[client.add(i, i) for i in range(5000)])
            assert results == [2 * i for i in range(5000)]
            futures = [client.call_async("add", i, 1) for i in range(5000)]
            assert await asyncio.gather(*futures) == [i + 1 for i in range(5000)]

    run(main())


def test_max_pending_refuses_at_once_with_server_busy():
    async def main():
        server, bound = await serving(Service(), pool_size=1, max_pending=2)
        async with server, zrpc.aio.Client(bound, timeout=30) as client:
            results = await asyncio.gather(*[client.wait(0.3) for _ in range(6)], return_exceptions=True)
        ok = [r for r in results if r == 0.3]
        busy = [r for r in results if isinstance(r, zrpc.ServerBusy)]
        assert len(ok) == 3 and len(busy) == 3, results  # one running, two waiting
        assert "max_pending" in str(busy[0])

    run(main())


def test_cancelling_the_awaiting_task_cancels_the_call_on_the_server():
    async def main():
        service = Service()
        server, bound = await serving(service)
        async with server, zrpc.aio.Client(bound, timeout=30) as client:
            task = asyncio.ensure_future(client.wait(30))
            assert await until(lambda: server.calls_in_flight == 1)
            started = time.monotonic()
            task.cancel()
            await asyncio.wait_for(service.cancelled.wait(), 5)
            assert time.monotonic() - started < 2
            assert await until(lambda: server.calls_in_flight == 0)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await client.add(1, 1) == 2  # the client goes on

    run(main())


def test_leaving_an_async_for_early_stops_the_server_generator():
    async def main():
        service = Service()
        server, bound = await serving(service)
        async with server, zrpc.aio.Client(bound, timeout=30, stream_window=4) as client:
            items = []
            async for item in client.count(10 ** 9):
                items.append(item)
                if len(items) == 3:
                    break
            gc.collect()
            await asyncio.wait_for(service.stream_closed.wait(), 5)
            assert items == [0, 1, 2]
            assert await until(lambda: server.calls_in_flight == 0)

    run(main())


def test_streams_respect_credit_and_end_cleanly():
    async def main():
        server, bound = await serving(Service(), sync_methods="inline")
        async with server, zrpc.aio.Client(bound, timeout=30, stream_window=8) as client:
            # A server that sent beyond its credit would make the client raise ProtocolError.
            assert [x async for x in client.count(3000)] == list(range(3000))
            assert [x async for x in client.plain_count(100)] == list(range(100))
            stream = await client.count(0)
            assert isinstance(stream, zrpc.aio.Stream)
            assert [x async for x in stream] == []
            with pytest.raises(TypeError):
                async for _ in client.add(1, 1):
                    pass

    run(main())


def test_a_blocking_plain_function_does_not_freeze_the_loop():
    async def main():
        server, bound = await serving(Service(), threads=2)
        async with server, zrpc.aio.Client(bound, timeout=30) as client:
            blocked = client.call_async("block", 1.0)
            started = time.monotonic()
            assert await client.add(1, 2) == 3
            assert time.monotonic() - started < 0.5  # served while block() sleeps in its thread
            assert await blocked == 1.0

    run(main())


def test_curve_and_ip_rules_work_on_asyncio():
    (spub, ssec), (cpub, csec), (_, other_sec) = zrpc.curve_keypair(), zrpc.curve_keypair(), zrpc.curve_keypair()

    async def whoami():
        return zrpc.aio.current_call().user_id

    async def main():
        server = zrpc.aio.Server({"whoami": whoami, "add": lambda a, b: a + b}, sync_methods="inline",
                                 curve_secret_key=ssec, curve_clients=[cpub], allow_ips=["127.0.0.1"])
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        try:
            async with zrpc.aio.Client(endpoint, timeout=10, curve_server_key=spub, curve_secret_key=csec) as c:
                assert await c.add(1, 2) == 3
                assert await c.whoami() == cpub.decode()
            # An unknown key, a wrong server key, plaintext, and a denied address are refused at once.
            refused = [
                dict(curve_server_key=spub, curve_secret_key=other_sec),
                dict(curve_server_key=cpub),
                dict(),
            ]
            for options in refused:
                async with zrpc.aio.Client(endpoint, timeout=10, **options) as c:
                    started = time.monotonic()
                    with pytest.raises(zrpc.AuthenticationFailed):
                        await c.add(1, 2)
                    assert time.monotonic() - started < 5
            port = endpoint.rsplit(":", 1)[1]
            async with zrpc.aio.Client(f"tcp://127.0.0.2:0;127.0.0.1:{port}", timeout=10,
                                       curve_server_key=spub, curve_secret_key=csec) as c:
                with pytest.raises(zrpc.AuthenticationFailed):
                    await c.add(1, 2)
        finally:
            await server.close()

    run(main())
    with pytest.raises(RuntimeError, match="inside a coroutine"):
        zrpc.aio.Client("tcp://127.0.0.1:1")


def test_a_call_to_a_killed_server_fails_with_lost_remote():
    endpoint = free_tcp_endpoint()
    proc = spawn_peer("aio_server.py", endpoint, "0.5")
    try:
        async def main():
            async with zrpc.aio.Client(endpoint, timeout=30, heartbeat=0.5) as client:
                assert await client.add(1, 1) == 2
                call = client.call_async("slow", 30)
                await asyncio.sleep(0.2)
                proc.kill()
                started = time.monotonic()
                with pytest.raises(zrpc.LostRemote):
                    await call
                assert time.monotonic() - started < 5

        run(main())
    finally:
        stop_peer(proc)


def test_aio_works_in_a_process_without_gevent():
    code = """
import asyncio, sys
sys.modules['gevent'] = None
import zrpc.aio
async def count(n):
    for i in range(n):
        yield i
async def main():
    async with zrpc.aio.Server({'add': lambda a, b: a + b, 'count': count}, sync_methods='inline') as server:
        endpoint = server.bind('tcp://127.0.0.1:*')
        server.start()
        async with zrpc.aio.Client(endpoint, timeout=10) as client:
            assert await client.add(1, 2) == 3
            assert [x async for x in client.count(3)] == [0, 1, 2]
    assert sys.modules['gevent'] is None
    assert not any(name.startswith('gevent.') for name in sys.modules)
    print('ok')
asyncio.run(main())
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_uvloop_client_and_server():
    uvloop = pytest.importorskip("uvloop", reason="uvloop is in the test extra; not installed here")
    endpoint = free_tcp_endpoint()
    proc = spawn_peer("aio_server.py", endpoint, "--uvloop")
    try:
        async def main():
            assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
            async with zrpc.aio.Client(endpoint, timeout=10) as client:
                assert (await client.loop_name()).startswith("uvloop")
                assert await asyncio.gather(*[client.add(i, 1) for i in range(2000)]) == [i + 1 for i in range(2000)]
                assert [x async for x in client.count(500)] == list(range(500))
            server, bound = await serving(Service())
            async with server, zrpc.aio.Client(bound, timeout=10) as client:
                assert await client.add(2, 2) == 4

        uvloop.run(asyncio.wait_for(main(), 60))
    finally:
        stop_peer(proc)


def test_stop_awaited_by_a_method_returns_and_run_ends_once_the_other_calls_are_done():
    """``async def shutdown(): await server.stop()`` must not wait for the call that awaits it."""
    async def main():
        slow_started = asyncio.Event()

        async def slow():
            slow_started.set()
            await asyncio.sleep(0.5)
            return "slow done"

        async def shutdown():
            await server.stop()
            return "bye"

        server = zrpc.aio.Server({"slow": slow, "shutdown": shutdown})
        endpoint = server.bind("tcp://127.0.0.1:*")
        runner = asyncio.ensure_future(server.run())
        try:
            async with zrpc.aio.Client(endpoint, timeout=10) as client:
                pending = asyncio.ensure_future(client.slow())
                await asyncio.wait_for(slow_started.wait(), 10)
                assert await client.shutdown() == "bye"  # the stopping call's reply still reaches its caller
                assert not runner.done()  # slow() is still running: run() waits for it
                assert await pending == "slow done"
                await asyncio.wait_for(runner, 10)
        finally:
            await server.close()
            runner.cancel()

    run(main())
