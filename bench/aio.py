"""The asyncio side of the benchmark: zrpc.aio against a hand-written asyncio pyzmq baseline.

``bench.servers`` and ``bench.workloads`` call in here for the frameworks
``aio`` and ``aio-baseline``, so their figures sit in the same table, from
the same run, as the gevent ones (``python -m bench``):

* ``aio``: ``zrpc.aio.Server`` (``async def`` methods) and ``zrpc.aio.Client``.
* ``aio-baseline``: about the least asyncio code that does RPC over ZeroMQ:
  a ``zmq.asyncio`` ROUTER answering each request (a task only for sleep1),
  and a DEALER client with one reader task resolving futures by message id.
  Same msgpack frames as zerorpc v3; no heartbeats, credit or cancellation.

Workloads: ``seq``, ``conc`` and ``sleep``, measured as the gevent ones are
(bench.workloads), with tasks instead of greenlets.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Dict, List, Optional

from .procs import hwm_kib, rss_kib
from .workloads import cpu_mark, cpu_per_call, latency_fields, sleep_fields

__all__ = ["FRAMEWORKS", "serve", "run_workload"]

FRAMEWORKS = ("aio", "aio-baseline")
_now = time.perf_counter


class _Sleepers:
    """How many ``sleep1()`` calls run at once (as in bench.servers)."""

    now = 0
    peak = 0


async def _sleep1() -> bool:
    _Sleepers.now += 1
    _Sleepers.peak = max(_Sleepers.peak, _Sleepers.now)
    try:
        await asyncio.sleep(1.0)
    finally:
        _Sleepers.now -= 1
    return True


def _sleep_stats() -> Dict[str, int]:
    out = {"peak": _Sleepers.peak, "now": _Sleepers.now}
    _Sleepers.peak = _Sleepers.now
    return out


# -- servers -------------------------------------------------------------------------
async def _serve_aio(endpoint: str, heartbeat: Optional[float], ready: Callable[[str], None]) -> None:
    import zrpc.aio

    class Service:
        async def echo(self, x):
            return x

        async def sleep1(self):
            return await _sleep1()

        async def sleep_stats(self):
            return _sleep_stats()

    server = zrpc.aio.Server(Service(), name="bench", heartbeat=heartbeat)
    ready(server.bind(endpoint))
    await server.run()


async def _serve_aio_baseline(endpoint: str, heartbeat: Optional[float], ready: Callable[[str], None]) -> None:
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
        reply(envelope, header, await _sleep1())

    tasks = set()
    ready(sock.getsockopt(zmq.LAST_ENDPOINT).decode())
    while True:
        frames = await sock.recv_multipart()
        header, name, args = msgpack.unpackb(frames[-1], raw=False)
        if name == "echo":
            reply(frames[:-1], header, args[0])
        elif name == "sleep1":
            task = asyncio.ensure_future(sleep1(frames[:-1], header))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif name == "sleep_stats":
            reply(frames[:-1], header, _sleep_stats())


def serve(framework: str, endpoint: str, heartbeat: Optional[float], ready: Callable[[str], None]) -> None:
    """Serve ``framework`` on ``endpoint`` until killed; ``ready(bound endpoint)`` once listening."""
    serve_it = _serve_aio if framework == "aio" else _serve_aio_baseline
    asyncio.run(serve_it(endpoint, heartbeat, ready))


# -- clients -------------------------------------------------------------------------
class _BaselineClient:
    """One DEALER, one reader task resolving each reply's future by message id."""

    def __init__(self, endpoint: str) -> None:
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

    def call_async(self, name: str, *args: Any) -> "asyncio.Future[Any]":
        message_id = b"%032x" % next(self.ids)
        future = self.pending[message_id] = self.loop.create_future()
        self.sock.send_multipart([b"", self.packb([{"message_id": message_id, "v": 3}, name, list(args)])])
        return future


async def _seq(call: Callable[..., Any], server_pid: int, p: Dict[str, Any]) -> Dict[str, Any]:
    duration, max_calls = p["duration"], p["max_calls"]
    payload = "hello, world"
    lat: List[float] = []
    mark = cpu_mark(server_pid)
    t0 = t = _now()
    deadline = t0 + duration
    n = 0
    while n < max_calls and t < deadline:
        await call("echo", payload)
        t1 = _now()
        lat.append(t1 - t)
        t = t1
        n += 1
    return {"calls": n, "calls_per_s": n / (t - t0), **latency_fields(lat), **cpu_per_call(server_pid, mark, n)}


async def _conc(call: Callable[..., Any], server_pid: int, p: Dict[str, Any]) -> Dict[str, Any]:
    duration, callers, max_calls = p["duration"], p["callers"], p["max_calls"]
    done = errors = 0
    t0 = _now()
    deadline = t0 + duration

    async def caller() -> None:
        nonlocal done, errors
        while done < max_calls and _now() < deadline:
            try:
                await call("echo", "hello, world")
            except Exception:
                errors += 1
            done += 1

    mark = cpu_mark(server_pid)
    await asyncio.wait_for(asyncio.gather(*[caller() for _ in range(callers)]), duration + 60)
    elapsed = _now() - t0
    return {"calls": done, "errors": errors, "calls_per_s": (done - errors) / elapsed,
            **cpu_per_call(server_pid, mark, done)}


async def _sleep(call: Callable[..., Any], server_pid: int, p: Dict[str, Any]) -> Dict[str, Any]:
    n, wall_limit = p["n"], p["wall_limit"]
    await call("sleep_stats")
    await asyncio.sleep(0.2)
    idle_kib = rss_kib(server_pid)
    t0 = _now()
    futures = [asyncio.ensure_future(call("sleep1")) for _ in range(n)]
    sent_s = _now() - t0
    await asyncio.wait(futures, timeout=max(t0 + wall_limit - _now(), 0.0))
    wall = _now() - t0
    ok = sum(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    first_error = next((repr(f.exception()) for f in futures if f.done() and not f.cancelled() and f.exception()),
                       None)
    for f in futures:
        f.cancel()
    peak_kib = hwm_kib(server_pid)
    try:
        in_flight = (await asyncio.wait_for(call("sleep_stats"), 10.0))["peak"]
    except Exception:  # a server still drowning in calls may not answer: then divide by n
        in_flight = n
    return sleep_fields(n, wall, sent_s, ok, first_error, idle_kib, peak_kib, in_flight, hwm_kib(os.getpid()))


_WORKLOADS = {"seq": _seq, "conc": _conc, "sleep": _sleep}


async def _run(workload: str, framework: str, endpoint: str, server_pid: int, p: Dict[str, Any]) -> Dict[str, Any]:
    if framework == "aio":
        import zrpc.aio

        client: Any = zrpc.aio.Client(endpoint, timeout=p.get("timeout", 60.0), heartbeat=p.get("heartbeat", 5.0))
    else:
        client = _BaselineClient(endpoint)
    call = client.call_async
    for i in range(200):  # warm up: connected, caches filled
        await call("echo", i)
    return await _WORKLOADS[workload](call, server_pid, p)


def run_workload(workload: str, framework: str, endpoint: str, server_pid: int, p: Dict[str, Any],
                 ) -> Dict[str, Any]:
    """One measurement on a fresh loop, bounded by ``p["budget"]`` seconds; ``cpu`` measures CPU per call."""
    if workload not in _WORKLOADS:
        raise ValueError(f"{workload} has no asyncio version (only {', '.join(_WORKLOADS)})")
    budget = p.get("budget", 120)
    return asyncio.run(asyncio.wait_for(_run(workload, framework, endpoint, server_pid, p), budget))
