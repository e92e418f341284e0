"""The asyncio rows: zrpc.aio against a hand-written asyncio pyzmq baseline and gevent zrpc.

    python -m bench.aio [--runs 3] [--duration 2] [--only seq,conc,sleep]

Frameworks (each server and each client in a process of its own, on 127.0.0.1):

* ``aio``: ``zrpc.aio.Server`` (``async def`` methods) and ``zrpc.aio.Client``.
* ``aio-baseline``: about the least asyncio code that does RPC over ZeroMQ:
  a ``zmq.asyncio`` ROUTER answering each request (a task only for sleep1),
  and a DEALER client with one reader task resolving futures by message id.
  Same msgpack frames as zerorpc v3; no heartbeats, credit or cancellation.
* ``zrpc``: the gevent server and client, for the conc ratio.

Workloads: ``seq`` (one caller, calls/s), ``conc`` (64 concurrent callers,
calls/s), ``sleep`` (10,000 concurrent calls of a 1 s sleep: wall seconds).
Runs are interleaved across frameworks; medians are printed with the
ratios the issue sets as targets.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

FRAMEWORKS = ("aio", "aio-baseline", "zrpc")
WORKLOADS = ("seq", "conc", "sleep")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLERS = 64
SLEEPERS = 10_000


# -- servers -------------------------------------------------------------------------
async def _serve_aio(endpoint: str) -> None:
    import asyncio

    import zrpc.aio

    class Service:
        async def echo(self, x):
            return x

        async def sleep1(self):
            await asyncio.sleep(1.0)
            return True

    server = zrpc.aio.Server(Service(), name="bench")
    server.bind(endpoint)
    print("READY", flush=True)
    await server.run()


async def _serve_aio_baseline(endpoint: str) -> None:
    import asyncio

    import msgpack
    import zmq
    import zmq.asyncio

    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(endpoint)
    packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
    ids = iter(range(1 << 62))

    def reply(envelope: List[bytes], header: Dict[str, Any], result: Any) -> None:
        out = {"message_id": b"%032x" % next(ids), "v": 3, "response_to": header["message_id"]}
        sock.send_multipart([*envelope, packb([out, "OK", [result]])])

    async def sleep1(envelope: List[bytes], header: Dict[str, Any]) -> None:
        await asyncio.sleep(1.0)
        reply(envelope, header, True)

    print("READY", flush=True)
    while True:
        frames = await sock.recv_multipart()
        header, name, args = msgpack.unpackb(frames[-1], raw=False)
        if name == "echo":
            reply(frames[:-1], header, args[0])
        elif name == "sleep1":
            asyncio.ensure_future(sleep1(frames[:-1], header))


def _serve_zrpc(endpoint: str) -> None:
    import gevent

    import zrpc

    class Service:
        def echo(self, x):
            return x

        def sleep1(self):
            gevent.sleep(1.0)
            return True

    server = zrpc.Server(Service(), name="bench")
    server.bind(endpoint)
    print("READY", flush=True)
    server.run()


# -- clients -------------------------------------------------------------------------
class _BaselineClient:
    """One DEALER, one reader task resolving each reply's future by message id."""

    def __init__(self, endpoint: str) -> None:
        import asyncio

        import msgpack
        import zmq
        import zmq.asyncio

        self.sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        self.unpackb = msgpack.unpackb
        self.loop = asyncio.get_running_loop()
        self.pending: Dict[bytes, Any] = {}
        self.ids = iter(range(1 << 62))
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            header, name, args = self.unpackb(frames[-1], raw=False)
            future = self.pending.pop(header["response_to"], None)
            if future is not None and not future.done():
                future.set_result(args[0])

    def call(self, name: str, *args: Any) -> Any:
        message_id = b"%032x" % next(self.ids)
        future = self.pending[message_id] = self.loop.create_future()
        self.sock.send_multipart([b"", self.packb([{"message_id": message_id, "v": 3}, name, list(args)])])
        return future

    async def close(self) -> None:
        self.reader.cancel()
        self.sock.close()


async def _aio_client(framework: str, workload: str, endpoint: str, duration: float) -> Dict[str, Any]:
    import asyncio

    if framework == "aio":
        import zrpc.aio

        client: Any = zrpc.aio.Client(endpoint, timeout=60)

        def call(name: str, *args: Any) -> Any:
            return client.call_async(name, *args)
    else:
        client = _BaselineClient(endpoint)
        call = client.call
    for _ in range(100):  # warm up: connected, caches filled
        await call("echo", 1)
    result = await _measure_async(workload, call, duration)
    await client.close()
    return result


async def _measure_async(workload: str, call: Any, duration: float) -> Dict[str, Any]:
    import asyncio

    if workload == "sleep":
        started = time.monotonic()
        results = await asyncio.gather(*[call("sleep1") for _ in range(SLEEPERS)], return_exceptions=True)
        return {"wall_s": time.monotonic() - started, "failures": sum(r is not True for r in results)}
    calls = 0
    deadline = time.monotonic() + duration

    async def caller() -> None:
        nonlocal calls
        while time.monotonic() < deadline:
            await call("echo", calls)
            calls += 1

    started = time.monotonic()
    await asyncio.gather(*[caller() for _ in range(CALLERS if workload == "conc" else 1)])
    return {"calls_per_s": calls / (time.monotonic() - started)}


def _gevent_client(workload: str, endpoint: str, duration: float) -> Dict[str, Any]:
    import gevent

    import zrpc

    client = zrpc.Client(endpoint, timeout=60)
    for _ in range(100):
        client.echo(1)
    if workload == "sleep":
        started = time.monotonic()
        futures = [client.call_async("sleep1") for _ in range(SLEEPERS)]
        gevent.joinall(futures, raise_error=False)
        failures = sum(not f.successful() for f in futures)
        return {"wall_s": time.monotonic() - started, "failures": failures}
    calls = 0
    deadline = time.monotonic() + duration

    def caller() -> None:
        nonlocal calls
        while time.monotonic() < deadline:
            client.echo(calls)
            calls += 1

    started = time.monotonic()
    gevent.joinall([gevent.spawn(caller) for _ in range(CALLERS if workload == "conc" else 1)])
    result = {"calls_per_s": calls / (time.monotonic() - started)}
    client.close()
    return result


# -- orchestration -------------------------------------------------------------------
def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def measure(framework: str, workload: str, duration: float) -> Dict[str, Any]:
    """One run: a server process and a client process; the client's result."""
    endpoint = _free_endpoint()
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen([sys.executable, "-m", "bench.aio", "_serve", framework, endpoint],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        if server.stdout.readline().strip() != "READY":
            raise RuntimeError(f"the {framework} server did not start")
        out = subprocess.run([sys.executable, "-m", "bench.aio", "_client", framework, workload, endpoint,
                              str(duration)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{framework} {workload} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.kill()
        server.communicate(timeout=10)


def main(argv: Any = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        framework, endpoint = argv[1], argv[2]
        if framework == "zrpc":
            _serve_zrpc(endpoint)
        else:
            import asyncio

            asyncio.run(_serve_aio(endpoint) if framework == "aio" else _serve_aio_baseline(endpoint))
        return
    if argv and argv[0] == "_client":
        framework, workload, endpoint, duration = argv[1], argv[2], argv[3], float(argv[4])
        if framework == "zrpc":
            result = _gevent_client(workload, endpoint, duration)
        else:
            import asyncio

            result = asyncio.run(_aio_client(framework, workload, endpoint, duration))
        print(json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.aio", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    results: Dict[str, Dict[str, List[float]]] = {}
    for workload in args.only.split(","):
        key = "wall_s" if workload == "sleep" else "calls_per_s"
        for run in range(args.runs):
            for framework in FRAMEWORKS:  # interleaved: neighbours are compared
                value = measure(framework, workload, args.duration)[key]
                results.setdefault(workload, {}).setdefault(framework, []).append(value)
                print(f"  {workload} run {run + 1} {framework}: {value:,.2f}", file=sys.stderr, flush=True)
    print(f"{'workload':10} {'metric':9} " + " ".join(f"{fw:>13}" for fw in FRAMEWORKS)
          + f" {'aio/baseline':>13} {'aio/zrpc':>9}")
    for workload, by_fw in results.items():
        med = {fw: statistics.median(values) for fw, values in by_fw.items()}
        metric = "wall s" if workload == "sleep" else "calls/s"
        if workload == "sleep":  # less is better: ratios as speed
            ratios = med["aio-baseline"] / med["aio"], med["zrpc"] / med["aio"]
        else:
            ratios = med["aio"] / med["aio-baseline"], med["aio"] / med["zrpc"]
        print(f"{workload:10} {metric:9} " + " ".join(f"{med[fw]:>13,.2f}" for fw in FRAMEWORKS)
              + f" {ratios[0]:>12.2f}x {ratios[1]:>8.2f}x")


if __name__ == "__main__":
    main()
