"""The client side of every workload, run in its own process against one server process.

    python -m bench.workloads WORKLOAD FRAMEWORK ENDPOINT SERVER_PID PARAMS_JSON

prints one line ``RESULT {json}`` and exits. A fresh process per measurement
keeps frameworks from sharing a hub, a zmq context, a garbage collector or a
peak-RSS figure. The client reads the server's CPU time and memory from
/proc itself, around exactly the part it times. Every loop is bounded by a
count and by a deadline.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent

from .procs import cpu_seconds, die_with_parent, hwm_kib, raise_nofile, rss_kib

__all__ = ["WORKLOADS", "connect", "main"]

Result = Dict[str, Any]
_now = time.perf_counter


# -- one client API over three frameworks ------------------------------------
class _Adapter:
    """What a workload needs from a client: the same five operations for every framework."""

    def echo(self, x: Any) -> Any:
        raise NotImplementedError

    def call(self, method: str, *args: Any) -> Any:
        raise NotImplementedError

    def call_async(self, method: str, *args: Any) -> Any:
        """Start a call; return a gevent AsyncResult-like object (``wait``, ``successful``)."""
        raise NotImplementedError

    def stream(self, n: int) -> Any:
        """An iterator over ``numbers(n)`` with ``close()``, or None if the framework has no streams."""
        return None

    def batch_echo(self, n: int, timeout: float) -> List[Any]:
        """``echo(i)`` for i in range(n), all in flight at once; results in order.

        A call not done ``timeout`` seconds after the first was sent gets a TimeoutError in its slot.
        """
        deadline = _now() + timeout
        futures = [self.call_async("echo", i) for i in range(n)]
        results: List[Any] = []
        for future in futures:
            _wait(future, max(deadline - _now(), 0.0))
            if not future.ready():
                results.append(TimeoutError())
            else:
                results.append(future.value if future.successful() else future.exception)
        return results

    def close(self) -> None:
        pass


class _Zrpc(_Adapter):
    #: the server's CURVE public key when the case runs with CURVE (set by main from the params)
    curve_server_key: Optional[str] = None

    def __init__(self, endpoint: str, timeout: float, heartbeat: Optional[float], context: Any = None):
        import zrpc

        self.client = zrpc.Client(endpoint, timeout=timeout, heartbeat=heartbeat, context=context,
                                  curve_server_key=self.curve_server_key)
        self.call = self.client.call
        self.call_async = self.client.call_async

    def echo(self, x: Any) -> Any:
        return self.client.echo(x)  # the way users write it: attribute-style proxy

    def stream(self, n: int) -> Any:
        return self.client.numbers(n)

    def batch_echo(self, n: int, timeout: float) -> List[Any]:
        b = self.client.batch()  # each call is bounded by the client's timeout
        for i in range(n):
            b.echo(i)
        return b.run()

    def close(self) -> None:
        self.client.close()


class _Zerorpc(_Adapter):
    def __init__(self, endpoint: str, timeout: float, heartbeat: Optional[float], context: Any = None):
        import zerorpc

        self.client = zerorpc.Client(endpoint, timeout=timeout, heartbeat=heartbeat, context=context)

    def echo(self, x: Any) -> Any:
        return self.client.echo(x)

    def call(self, method: str, *args: Any) -> Any:
        return self.client(method, *args)

    def call_async(self, method: str, *args: Any) -> Any:
        # Not ``async=True``: zerorpc's heartbeat kills the greenlet that opened
        # the channel when the remote goes quiet, which would be the bench's
        # main greenlet. A greenlet per call is what async=True spawns anyway.
        return gevent.spawn(self.client, method, *args)

    def stream(self, n: int) -> Any:
        return self.client.numbers(n)  # a generator: has close()

    def close(self) -> None:
        self.client.close()


class _Baseline(_Adapter):
    def __init__(self, endpoint: str, timeout: float, heartbeat: Optional[float], context: Any = None):
        from .baseline import BaselineClient

        self.client = BaselineClient(endpoint, timeout=timeout, context=context)
        self.call = self.client.call
        self.call_async = self.client.call_async

    def echo(self, x: Any) -> Any:
        return self.client.call("echo", x)

    def close(self) -> None:
        self.client.close()


_ADAPTERS = {"zrpc": _Zrpc, "zerorpc": _Zerorpc, "baseline": _Baseline}
#: Measured by bench.aio on an asyncio loop (seq, conc and sleep only).
AIO_FRAMEWORKS = ("aio", "aio-baseline")


def connect(framework: str, endpoint: str, timeout: float = 60.0,
            heartbeat: Optional[float] = 5.0, context: Any = None) -> _Adapter:
    """A client of ``framework`` connected to ``endpoint``."""
    return _ADAPTERS[framework](endpoint, timeout, heartbeat, context)


def _shared_context(framework: str, max_sockets: int) -> Any:
    """The framework's default zmq context, allowed ``max_sockets`` sockets (libzmq's default is 1,023)."""
    import zmq

    if framework == "zerorpc":
        import zerorpc

        ctx = zerorpc.Context.get_instance()
    elif framework == "baseline":
        import zmq.green

        ctx = zmq.green.Context.instance()
    else:
        ctx = zmq.Context.instance()
    ctx.set(zmq.MAX_SOCKETS, max_sockets)
    return ctx


# -- helpers -----------------------------------------------------------------
def _wait(future: Any, timeout: Optional[float] = None) -> None:
    """Wait for an AsyncResult or a Greenlet (zerorpc's calls run in one)."""
    wait = getattr(future, "wait", None) or future.join
    wait(timeout)


def _percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[index]


def _warm(adapter: _Adapter, n: int = 100) -> None:
    for i in range(n):
        adapter.echo(i)


def cpu_mark(server_pid: int) -> Tuple[float, float, float]:
    """CPU seconds so far: the server's, its Python thread's, this process's."""
    return cpu_seconds(server_pid), cpu_seconds(server_pid, server_pid), time.process_time()


def cpu_per_call(server_pid: int, mark: Tuple[float, float, float], n: int) -> Result:
    """CPU µs per call on both sides since ``mark`` (``cpu_mark``), over ``n`` calls."""
    now = cpu_mark(server_pid)
    per = [(b - a) / max(n, 1) * 1e6 for a, b in zip(mark, now)]
    return {"server_cpu_us_per_call": per[0], "server_main_cpu_us_per_call": per[1],
            "client_cpu_us_per_call": per[2]}


def latency_fields(lat: List[float]) -> Result:
    """p50 and p99 of per-call latencies in seconds, as µs."""
    lat.sort()
    return {"p50_us": _percentile(lat, 0.50) * 1e6, "p99_us": _percentile(lat, 0.99) * 1e6}


def sleep_fields(n: int, wall: float, sent_s: float, ok: int, first_error: Optional[str], idle_kib: float,
                 peak_kib: float, in_flight: int, client_peak_kib: float) -> Result:
    """The sleep workload's result, whatever the framework."""
    return {
        "n": n,
        "wall_s": wall,
        "send_s": sent_s,
        "failures": n - ok,
        "first_error": first_error,
        "server_idle_kib": idle_kib,
        "server_peak_kib": peak_kib,
        "max_in_flight": in_flight,
        # Peak memory over the most calls that were sleeping at once (== n when the
        # server keeps up; a slow server never holds all n at the same time).
        "kib_per_call": (peak_kib - idle_kib) / max(in_flight, 1),
        "client_peak_kib": client_peak_kib,
    }


# -- the workloads -------------------------------------------------------------
def seq(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """One caller, sequential echo of a short string: rate, latency, CPU per call on both sides."""
    duration, max_calls = p["duration"], p["max_calls"]
    _warm(adapter, 200)
    echo = adapter.echo
    payload = "hello, world"
    lat: List[float] = []
    append = lat.append
    mark = cpu_mark(server_pid)
    t0 = _now()
    deadline = t0 + duration
    n = 0
    t = t0
    while n < max_calls and t < deadline:
        echo(payload)
        t1 = _now()
        append(t1 - t)
        t = t1
        n += 1
    elapsed = t - t0
    return {"calls": n, "calls_per_s": n / elapsed, **latency_fields(lat), **cpu_per_call(server_pid, mark, n)}


def conc(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """``callers`` greenlets sharing one client, each calling echo in a closed loop."""
    duration, callers, max_calls = p["duration"], p["callers"], p["max_calls"]
    _warm(adapter, 200)
    echo = adapter.echo
    done = [0]
    errors = [0]
    t0 = _now()
    deadline = t0 + duration

    def caller() -> None:
        payload = "hello, world"
        while done[0] < max_calls and _now() < deadline:
            try:
                echo(payload)
            except Exception:
                errors[0] += 1
            done[0] += 1

    mark = cpu_mark(server_pid)
    gevent.joinall([gevent.spawn(caller) for _ in range(callers)], timeout=duration + 60)
    elapsed = _now() - t0
    n = done[0]
    return {"calls": n, "errors": errors[0], "calls_per_s": (n - errors[0]) / elapsed,
            **cpu_per_call(server_pid, mark, n)}


def sleep(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """N calls of ``sleep1()`` in flight at once from one client: wall time, failures, server memory."""
    n, wall_limit = p["n"], p["wall_limit"]
    _warm(adapter, 20)
    adapter.call("sleep_stats")
    gevent.sleep(0.2)
    idle_kib = rss_kib(server_pid)
    call_async = adapter.call_async
    t0 = _now()
    deadline = t0 + wall_limit
    futures = []
    for _ in range(n):
        futures.append(call_async("sleep1"))
        if _now() > deadline:
            break
    sent_s = _now() - t0
    ok = 0
    for future in futures:
        remaining = deadline - _now()
        if remaining > 0:
            _wait(future, remaining)
        if future.ready() and future.successful():
            ok += 1
    wall = _now() - t0
    peak_kib = hwm_kib(server_pid)
    stats = adapter.call_async("sleep_stats")
    _wait(stats, 10.0)  # a server still drowning in calls may not answer: then divide by n
    in_flight = stats.value["peak"] if stats.ready() and stats.successful() else n
    first_error = next((repr(f.exception) for f in futures if f.ready() and not f.successful()), None)
    return sleep_fields(n, wall, sent_s, ok, first_error, idle_kib, peak_kib, in_flight, hwm_kib(os.getpid()))


def big(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """Sequential echo of ``size`` bytes: payload MiB/s (one way) and latency."""
    size, duration, max_calls = p["size"], p["duration"], p["max_calls"]
    payload = os.urandom(size)
    echo = adapter.echo
    for _ in range(2):
        back = echo(payload)
        if len(back) != size:
            raise AssertionError(f"echo returned {len(back)} bytes, sent {size}")
    lat: List[float] = []
    t0 = _now()
    deadline = t0 + duration
    t = t0
    while len(lat) < max_calls and t < deadline:
        echo(payload)
        t1 = _now()
        lat.append(t1 - t)
        t = t1
    elapsed = t - t0
    n = len(lat)
    lat.sort()
    return {
        "calls": n,
        "mib_per_s": size * n / elapsed / 2**20,
        "p50_ms": _percentile(lat, 0.5) * 1e3,
        "p99_ms": _percentile(lat, 0.99) * 1e3,
    }


def stream_fast(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """Read ``numbers(n)`` as fast as possible (time-boxed): items/s."""
    n, time_limit = p["n"], p["time_limit"]
    _warm(adapter, 20)
    t0 = _now()
    deadline = t0 + time_limit
    items = adapter.stream(n)
    if items is None:
        return {"skipped": "no streams"}
    k = 0
    last = None
    for last in items:
        k += 1
        if not k & 1023 and _now() > deadline:
            break
    elapsed = _now() - t0
    items.close()
    if k == n and last != n - 1:
        raise AssertionError(f"last item {last!r}, expected {n - 1}")
    return {"items": k, "complete": k == n, "items_per_s": k / elapsed}


def stream_slow(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """Read one item every ``interval`` s for ``duration`` s, then close: RSS of both sides over time."""
    n, duration, interval = p["n"], p["duration"], p["interval"]
    _warm(adapter, 20)
    me = os.getpid()
    items = adapter.stream(n)
    if items is None:
        return {"skipped": "no streams"}
    iterator = iter(items)
    next(iterator)
    t0 = _now()
    deadline = t0 + duration
    samples = []  # (t, server KiB, client KiB)
    next_sample = t0
    k = 1
    while _now() < deadline:
        next(iterator)
        k += 1
        gevent.sleep(interval)
        if _now() >= next_sample:
            samples.append((_now() - t0, rss_kib(server_pid), rss_kib(me)))
            next_sample += 0.25
    items.close()
    settled = [s for s in samples if s[0] >= 0.5] or samples
    first, last = settled[0], settled[-1]
    return {
        "items": k,
        "samples": samples,
        "server_rss_kib": last[1],
        "client_rss_kib": last[2],
        "server_growth_kib": max(s[1] for s in settled) - first[1],
        "client_growth_kib": max(s[2] for s in settled) - first[2],
        "server_peak_kib": hwm_kib(server_pid),
        "client_peak_kib": hwm_kib(me),
    }


def batch(adapter: _Adapter, server_pid: int, p: Dict[str, Any]) -> Result:
    """``n`` echo calls sent together (zrpc: ``client.batch()``) vs ``n`` sequential calls."""
    n, time_limit = p["n"], p["time_limit"]
    _warm(adapter, 200)
    echo = adapter.echo
    t0 = _now()
    deadline = t0 + time_limit
    k = 0
    while k < n and _now() < deadline:
        echo(k)
        k += 1
    seq_rate = k / (_now() - t0)
    t0 = _now()
    results = adapter.batch_echo(n, p["timeout"])
    batch_rate = n / (_now() - t0)
    bad = sum(1 for i, r in enumerate(results) if r != i)
    return {
        "n": n,
        "seq_calls": k,
        "seq_calls_per_s": seq_rate,
        "batch_calls_per_s": batch_rate,
        "speedup": batch_rate / seq_rate,
        "failures": bad,
    }


def idle(framework: str, endpoint: str, server_pid: int, p: Dict[str, Any]) -> Result:
    """``n`` clients, each one connection that made one ping and then stays idle: server KiB per client."""
    n, time_limit, timeout = p["n"], p["time_limit"], p["timeout"]
    # zrpc clients watch their connections with a socket monitor: two more zmq sockets each.
    context = _shared_context(framework, 3 * n + 64)
    heartbeat = p.get("heartbeat", 5.0)
    first = connect(framework, endpoint, timeout, heartbeat, context)
    for _ in range(20):
        first.call("_zerorpc_ping")
    gevent.sleep(0.3)
    me = os.getpid()
    server0, client0 = rss_kib(server_pid), rss_kib(me)
    t0 = _now()
    deadline = t0 + time_limit
    clients = []
    failures = 0
    while len(clients) < n and _now() < deadline:
        client = connect(framework, endpoint, timeout, heartbeat, context)
        clients.append(client)
        try:
            client.call("_zerorpc_ping")
        except Exception:
            failures += 1
    connect_s = _now() - t0
    gevent.sleep(0.5)
    server1, client1 = rss_kib(server_pid), rss_kib(me)
    m = max(len(clients), 1)
    return {
        "clients": len(clients),
        "failures": failures + (n - len(clients)),
        "connect_s": connect_s,
        "server_idle_kib": server0,
        "server_kib": server1,
        "server_kib_per_client": (server1 - server0) / m,
        "client_kib_per_client": (client1 - client0) / m,
    }


WORKLOADS: Dict[str, Callable[..., Result]] = {
    "seq": seq,
    "conc": conc,
    "sleep": sleep,
    "big": big,
    "stream_fast": stream_fast,
    "stream_slow": stream_slow,
    "batch": batch,
    "idle": idle,
}


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    workload, framework, endpoint, server_pid, params = argv
    die_with_parent()
    raise_nofile()
    p = json.loads(params)
    pid = int(server_pid)
    budget = p.get("budget", 120)
    _Zrpc.curve_server_key = p.get("curve_server_key")
    try:
        if framework in AIO_FRAMEWORKS:
            from . import aio  # its own asyncio loop, bounded by the budget too

            result = aio.run_workload(workload, framework, endpoint, pid, p)
        else:
            result = _run_gevent(workload, framework, endpoint, pid, p, budget)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    # Skip teardown: closing thousands of sockets or calls in flight measures nothing.
    os._exit(0)


def _run_gevent(workload: str, framework: str, endpoint: str, pid: int, p: Dict[str, Any], budget: float) -> Result:
    with gevent.Timeout(budget, RuntimeError(f"{workload} took longer than its budget of {budget}s")):
        if workload == "idle":
            return idle(framework, endpoint, pid, p)
        adapter = connect(framework, endpoint, p.get("timeout", 60.0), p.get("heartbeat", 5.0))
        return WORKLOADS[workload](adapter, pid, p)


if __name__ == "__main__":
    main()
