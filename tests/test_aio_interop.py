"""zrpc.aio against every other peer, over tcp on 127.0.0.1, each side in its own process.

* aio client (this process, on asyncio) -> the gevent zrpc server, zerorpc 0.6.3, zerorpc-node.
* aio server (tests/peers/aio_server.py, no gevent) <- the gevent zrpc client (this
  process), the zerorpc 0.6.3 client (tests/peers/zerorpc_client.py) and the zrpc CLI.
"""
import asyncio
import json
import os
import subprocess as std_subprocess
import sys
import time

import gevent
import pytest

import zrpc
import zrpc.aio

from conftest import NODE_PEERS, ROOT, free_tcp_endpoint
from test_aio import run
from test_interop_zerorpc import run_zerorpc_client, value_of


@pytest.fixture
def aio_server(peer):
    endpoint = free_tcp_endpoint()
    peer("aio_server.py", endpoint, "1.0")
    return endpoint


# -- aio client -> other servers ---------------------------------------------------
def test_aio_client_calls_the_gevent_zrpc_server(peer):
    endpoint = free_tcp_endpoint()
    peer("zrpc_server.py", endpoint, "1.0")

    async def main():
        async with zrpc.aio.Client(endpoint, timeout=10, heartbeat=1.0) as client:
            assert await client.add(1, 2) == 3
            assert await client.add(a=2, b=3) == 5  # zrpc servers take keyword arguments
            assert await asyncio.gather(*[client.add(i, i) for i in range(1000)]) == [2 * i for i in range(1000)]
            # A quiet stream lives on heartbeats: 3 items 1.5 s apart, longer than two intervals.
            assert [x async for x in client.ticks(3, 1.5)] == [0, 1, 2]
            assert await client.sleep(2.5) == 2.5  # a call longer than two heartbeats
            with pytest.raises(zrpc.RemoteError):
                await client.nope()

    run(main())


def test_aio_client_calls_zerorpc_063(peer, tmp_path):
    endpoint = free_tcp_endpoint()
    peer("zerorpc_server.py", endpoint, "--heartbeat", "1", "--log", str(tmp_path / "zerorpc.log"))

    async def main():
        async with zrpc.aio.Client(endpoint, timeout=10, heartbeat=1.0) as client:
            assert await client.add(10, 20) == 30
            assert await client.greet("bob", "hi") == "hi bob"
            assert [x async for x in client.count(300)] == list(range(300))  # beyond zerorpc's 100 slots
            with pytest.raises(zrpc.RemoteError) as err:
                await client.boom()
            assert err.value.name == "ValueError"
            with pytest.raises(zrpc.KeywordArgumentsUnsupported):
                await client.add(a=1, b=2)
            assert (await client._zerorpc_ping())[0] == "pong"
            assert await client.slow(2.5) is not None  # longer than two heartbeats

    run(main())


def test_aio_client_calls_zerorpc_node(node_peers, tmp_path):
    endpoint = free_tcp_endpoint()
    proc = std_subprocess.Popen(["node", os.path.join(NODE_PEERS, "zerorpc_server.js"), endpoint,
                                 "--heartbeat", "1000"], stdout=std_subprocess.PIPE,
                                stderr=std_subprocess.PIPE, text=True, cwd=NODE_PEERS)
    try:
        assert proc.stdout.readline().strip() == "READY"

        async def main():
            async with zrpc.aio.Client(endpoint, timeout=10, heartbeat=1.0) as client:
                assert await client.add(1, 2) == 3
                assert await client.echo("héllo") == "héllo"
                assert await asyncio.gather(*[client.add(i, 1) for i in range(200)]) == [i + 1 for i in range(200)]
                assert [x async for x in client.count(50)] == list(range(50))
                with pytest.raises(zrpc.RemoteError):
                    await client.boom()
                assert await client.errors() == []  # node saw no lost heartbeat nor bad event

        run(main())
    finally:
        proc.kill()
        proc.communicate(timeout=10)


# -- other clients -> aio server ---------------------------------------------------
def test_gevent_zrpc_client_calls_the_aio_server(aio_server, tmp_path):
    client = zrpc.Client(aio_server, timeout=10, heartbeat=1.0)
    try:
        assert client.add(1, 2) == 3
        assert client.search("a", last="z") == ["a", "z", 10]
        futures = [client.call_async("add", i, i) for i in range(500)]
        assert [f.get() for f in futures] == [2 * i for i in range(500)]
        assert list(client.count(1000)) == list(range(1000))
        stream = client.count_then_fail(3)
        assert [next(stream) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(zrpc.RemoteError, match="stream broke"):
            next(stream)
        assert client.blocking(0.1) == 0.1
        assert client.slow(2.5) == "slept 2.5"  # longer than two heartbeats
        # Giving up on a call (its timeout) cancels it on the aio server.
        marker = tmp_path / "cancelled"
        with pytest.raises(zrpc.TimeoutExpired):
            client.with_options(timeout=0.3).slow(30, str(marker))
        deadline = time.monotonic() + 5
        while not marker.exists() and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert marker.read_text() == "cancelled"
    finally:
        client.close()


def test_zerorpc_client_calls_the_aio_server(aio_server):
    basic = run_zerorpc_client(aio_server, "basic")
    assert value_of(basic["add"]) == 30
    assert value_of(basic["echo_bytes"]) == {"bytes": "00ff"}
    assert value_of(basic["greet"]) == "hi bob"
    assert value_of(basic["echo_big"]) is True
    assert value_of(run_zerorpc_client(aio_server, "concurrent", 200)["concurrent"]) == [2 * i for i in range(200)]
    errors = run_zerorpc_client(aio_server, "errors")
    assert errors["boom"]["error"]["name"] == "ValueError"
    assert errors["unknown"]["error"]["name"] == "NameError"
    assert value_of(errors["after_errors"]) == 2
    stream = run_zerorpc_client(aio_server, "stream", 500, 150)
    assert value_of(stream["stream"]) == list(range(500))
    assert value_of(stream["empty_stream"]) == []


def test_the_cli_calls_the_aio_server(aio_server):
    env = {**os.environ, "PYTHONPATH": ROOT}
    call = std_subprocess.run([sys.executable, "-m", "zrpc", "-j", aio_server, "add", "1", "2"],
                              capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert call.returncode == 0, call.stderr
    assert call.stdout.strip() == "3"
    listing = std_subprocess.run([sys.executable, "-m", "zrpc", aio_server],
                                 capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "aio_service" in listing.stdout and "add" in listing.stdout
    stream = std_subprocess.run([sys.executable, "-m", "zrpc", "-j", aio_server, "count", "3"],
                                capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert stream.returncode == 0, stream.stderr
    assert [json.loads(line) for line in stream.stdout.split()] == [0, 1, 2]
