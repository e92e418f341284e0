"""Prometheus metrics for zrpc servers (``pip install zrpc[metrics]``: needs ``prometheus_client``).

    metrics = zrpc.metrics.ServerMetrics()
    server = zrpc.Server(service, interceptors=[metrics])
    metrics.watch(server)                       # gauges and counters read from the server
    zrpc.metrics.serve_metrics(9100)            # /metrics over HTTP (or zrpc serve --metrics-port)

What it records (names take the ``namespace``, "zrpc" by default):

* ``zrpc_server_calls_total{method, outcome}``: calls served, by outcome (ok, error, cancelled);
* ``zrpc_server_call_duration_seconds{method}``: a histogram of the time from request to reply;
* ``zrpc_server_calls_running``, ``zrpc_server_calls_queued``: calls in flight, and waiting for the pool;
* ``zrpc_server_bad_messages_total``, ``zrpc_server_callers_lost_total`` (no heartbeat for two
  intervals), ``zrpc_server_calls_refused_busy_total`` (max_pending reached).

The interceptor only registers a done callback that bumps a few ints; the
gauges and the last counters are read from :attr:`zrpc.Server.stats` when
scraped, so the server pays nothing for them. The core of zrpc never imports this module.
"""
from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["ServerMetrics", "serve_metrics", "DEFAULT_BUCKETS"]

#: Latency buckets (seconds): RPCs over ZeroMQ take from ~50 us to seconds.
DEFAULT_BUCKETS: Tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _MethodStats:
    """One method's counts: plain ints, bumped in the server's thread, read by the scrape."""

    __slots__ = ("outcomes", "buckets", "total")

    def __init__(self, buckets: int) -> None:
        self.outcomes: Dict[str, int] = {}
        self.buckets: List[int] = [0] * (buckets + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0  # seconds, for the histogram's _sum


class ServerMetrics:
    """A server interceptor that counts and times calls, and a collector of what it counted and
    of the servers it :meth:`watch`\\ es.

    ``registry`` defaults to prometheus_client's global REGISTRY (None:
    register nowhere; use :meth:`collect` yourself). Make one ServerMetrics
    per registry (names would clash otherwise). The call path only bumps
    Python ints (no prometheus_client object, no lock); the samples are built
    when scraped.
    """

    def __init__(self, registry: Any = REGISTRY, namespace: str = "zrpc",
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.namespace = namespace
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._methods: Dict[str, _MethodStats] = {}
        self._servers: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()  # only for the set of servers; scrapes come from another thread
        if registry is not None:
            registry.register(self)

    # -- the interceptor ---------------------------------------------------------
    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        call.add_done_callback(self._record)
        return proceed()

    def _record(self, call: Any) -> None:
        stats = self._methods.get(call.method)
        if stats is None:
            stats = self._methods[call.method] = _MethodStats(len(self._bounds))
        outcomes = stats.outcomes
        outcome = call.outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        duration = call.duration
        stats.buckets[bisect_left(self._bounds, duration)] += 1
        stats.total += duration

    # -- what servers count themselves --------------------------------------------
    def watch(self, server: Any) -> Any:
        """Report ``server``'s gauges and counters (``server.stats``) too; returns the server."""
        with self._lock:
            self._servers.add(server)
        return server

    def _stats(self) -> Dict[str, int]:
        with self._lock:
            servers = list(self._servers)
        total: Dict[str, int] = {}
        for server in servers:
            for name, value in server.stats.items():
                total[name] = total.get(name, 0) + value
        return total

    # -- the collector -------------------------------------------------------------
    def describe(self) -> Iterable[Any]:
        return []  # collected fresh at each scrape

    def collect(self) -> Iterable[Any]:
        """The samples, for prometheus_client (``registry.register(metrics)`` does it)."""
        ns = self.namespace
        calls = CounterMetricFamily(f"{ns}_server_calls", "Calls served, by method and outcome "
                                    "(ok, error, cancelled).", labels=["method", "outcome"])
        durations = HistogramMetricFamily(f"{ns}_server_call_duration_seconds", "Time from reading a request "
                                          "to the end of its reply (streams: all of it).", labels=["method"])
        for method, stats in list(self._methods.items()):
            for outcome, count in list(stats.outcomes.items()):
                calls.add_metric([method, outcome], count)
            running, buckets = 0, []
            for bound, count in zip(self._bounds, stats.buckets):
                running += count
                buckets.append((_le(bound), running))
            buckets.append(("+Inf", running + stats.buckets[-1]))
            durations.add_metric([method], buckets, stats.total)
        yield calls
        yield durations
        stats = self._stats()
        yield GaugeMetricFamily(f"{ns}_server_calls_running", "Calls running now.", value=stats.get("running", 0))
        yield GaugeMetricFamily(f"{ns}_server_calls_queued", "Calls waiting for room in the pool.",
                                value=stats.get("queued", 0))
        yield CounterMetricFamily(f"{ns}_server_bad_messages", "Undecodable or invalid messages received.",
                                  value=stats.get("bad_messages", 0))
        yield CounterMetricFamily(f"{ns}_server_callers_lost", "Calls whose caller stopped sending heartbeats.",
                                  value=stats.get("callers_lost", 0))
        yield CounterMetricFamily(f"{ns}_server_calls_refused_busy",
                                  "Calls refused because max_pending calls already waited.",
                                  value=stats.get("refused_busy", 0))


def _le(bound: float) -> str:
    return repr(bound)


def serve_metrics(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve ``registry`` at http://ADDR:PORT/metrics from a thread; returns the HTTP server (``shutdown()``)."""
    result = start_http_server(port, addr=addr, registry=registry)
    return result[0] if isinstance(result, tuple) else result
