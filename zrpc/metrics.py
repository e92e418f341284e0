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
  intervals), ``zrpc_server_calls_refused_busy_total`` (max_pending reached),
  ``zrpc_server_calls_cancelled_queued_total`` (cancelled by their caller, their deadline or a
  stop before they started running: they never reached the interceptors, so they are not in
  ``zrpc_server_calls_total``).

The interceptor only registers a done callback that bumps a few ints; the
gauges and the last counters are read from :attr:`zrpc.Server.stats` when
scraped, so the server pays nothing for them. The core of zrpc never imports this module.

Behind ``zrpc serve --workers N --metrics-port PORT`` each worker counts
its own calls and writes them to a private directory; the supervisor's
:class:`WorkersMetrics` serves their sum on the one port, with the
router's view per worker.
"""
from __future__ import annotations

import json
import os
import threading
import weakref
from bisect import bisect_left
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["ServerMetrics", "WorkersMetrics", "serve_metrics", "write_snapshot", "DEFAULT_BUCKETS",
           "SNAPSHOT_INTERVAL"]

#: Seconds between two snapshots a worker of ``zrpc serve --workers --metrics-port`` writes.
SNAPSHOT_INTERVAL = 0.5
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
        return _families(self.namespace, self.snapshot())

    def snapshot(self) -> Dict[str, Any]:
        """What was counted so far, as plain JSON-able data (what a worker hands its supervisor)."""
        return {
            "bounds": list(self._bounds),
            "methods": {method: {"outcomes": dict(stats.outcomes), "buckets": list(stats.buckets),
                                 "total": stats.total}
                        for method, stats in list(self._methods.items())},
            "stats": self._stats(),
        }


def _families(ns: str, snapshot: Dict[str, Any]) -> Iterable[Any]:
    """The metric families of one :meth:`ServerMetrics.snapshot` (or a sum of several)."""
    calls = CounterMetricFamily(f"{ns}_server_calls", "Calls served, by method and outcome "
                                "(ok, error, cancelled).", labels=["method", "outcome"])
    durations = HistogramMetricFamily(f"{ns}_server_call_duration_seconds", "Time from reading a request "
                                      "to the end of its reply (streams: all of it).", labels=["method"])
    bounds = snapshot["bounds"]
    for method, stats in snapshot["methods"].items():
        for outcome, count in stats["outcomes"].items():
            calls.add_metric([method, outcome], count)
        running, buckets = 0, []
        for bound, count in zip(bounds, stats["buckets"]):
            running += count
            buckets.append((_le(bound), running))
        buckets.append(("+Inf", running + stats["buckets"][-1]))
        durations.add_metric([method], buckets, stats["total"])
    yield calls
    yield durations
    stats = snapshot["stats"]
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
    yield CounterMetricFamily(f"{ns}_server_calls_cancelled_queued",
                              "Calls cancelled (caller, deadline or stop) before they started running.",
                              value=stats.get("cancelled_queued", 0))


#: Server stats that are levels (summed over live processes only), not counts.
_GAUGES = ("running", "queued")


def _add(total: Dict[str, Any], snapshot: Dict[str, Any], gauges: bool) -> None:
    """Add ``snapshot``'s counts into ``total`` (its gauges too if ``gauges``: a live process)."""
    if "bounds" not in total:
        total["bounds"] = list(snapshot["bounds"])
    if total["bounds"] != list(snapshot["bounds"]):
        return  # another bucket layout cannot be summed (never the case for zrpc serve's workers)
    methods = total.setdefault("methods", {})
    for method, stats in snapshot["methods"].items():
        into = methods.setdefault(method, {"outcomes": {}, "buckets": [0] * len(stats["buckets"]), "total": 0.0})
        for outcome, count in stats["outcomes"].items():
            into["outcomes"][outcome] = into["outcomes"].get(outcome, 0) + count
        into["buckets"] = [a + b for a, b in zip(into["buckets"], stats["buckets"])]
        into["total"] += stats["total"]
    sums = total.setdefault("stats", {})
    for name, value in snapshot["stats"].items():
        if gauges or name not in _GAUGES:
            sums[name] = sums.get(name, 0) + value


def write_snapshot(metrics: ServerMetrics, path: str) -> None:
    """Write ``metrics.snapshot()`` to ``path`` as JSON, atomically (a reader never sees half of it)."""
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(metrics.snapshot(), f)
    os.replace(partial, path)


class WorkersMetrics:
    """The metrics of a :class:`zrpc.Workers` (made with ``metrics=True``) as one server's, and its router's.

    Each worker writes its :class:`ServerMetrics` snapshot to
    ``workers.metrics_dir`` every ``SNAPSHOT_INTERVAL`` seconds and when it
    exits; a scrape sums them: counts over every worker that ever ran (a
    restarted worker's counts are kept, so counters never go back), levels
    (calls running, queued) over the live ones. Counts of a worker killed
    with SIGKILL miss what it did after its last snapshot. Adds the router's
    own: ``zrpc_workers_ready``, ``zrpc_worker_restarts_total`` and, per
    worker, ``zrpc_worker_calls_in_flight`` and ``zrpc_worker_calls_served_total``.
    """

    def __init__(self, workers: Any, registry: Any = REGISTRY, namespace: str = "zrpc") -> None:
        if not getattr(workers, "metrics_dir", None):
            raise ValueError("these workers keep no metrics: make them with zrpc.Workers(..., metrics=True)")
        self.workers = workers
        self.namespace = namespace
        self._retired: Dict[str, Any] = {}  # the counts of workers that are gone
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        status = self.workers.status()
        live = {w["pid"] for w in status["workers"] if w["pid"]}
        with self._lock:  # two scrapes at once must not retire a file twice
            total: Dict[str, Any] = {}
            if self._retired:
                _add(total, self._retired, False)
            directory = self.workers.metrics_dir
            for name in sorted(os.listdir(directory)):
                pid_text, _, ext = name.partition(".")
                if ext != "json" or not pid_text.isdigit():
                    continue
                path = os.path.join(directory, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        snapshot = json.load(f)
                except (OSError, ValueError):
                    continue
                if int(pid_text) in live:
                    _add(total, snapshot, True)
                else:  # its process is gone: its last counts stay, in the retired sum
                    _add(self._retired, snapshot, False)
                    _add(total, snapshot, False)
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        total.setdefault("bounds", list(DEFAULT_BUCKETS))
        total.setdefault("methods", {})
        total.setdefault("stats", {})
        yield from _families(self.namespace, total)
        ns = self.namespace
        yield GaugeMetricFamily(f"{ns}_workers_ready", "Worker processes connected and serving.",
                                value=sum(1 for w in status["workers"] if w["ready"]))
        yield CounterMetricFamily(f"{ns}_worker_restarts", "Worker processes restarted after they died.",
                                  value=sum(w["restarts"] for w in status["workers"]))
        in_flight = GaugeMetricFamily(f"{ns}_worker_calls_in_flight", "Calls the router sent to a worker and "
                                      "that have not ended.", labels=["worker"])
        served = CounterMetricFamily(f"{ns}_worker_calls_served", "Calls a worker slot ended (any process "
                                     "in it).", labels=["worker"])
        for w in status["workers"]:
            in_flight.add_metric([str(w["worker"])], w["in_flight"])
            served.add_metric([str(w["worker"])], w["served"])
        yield in_flight
        yield served


def _le(bound: float) -> str:
    return repr(bound)


def serve_metrics(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve ``registry`` at http://ADDR:PORT/metrics from a thread; returns the HTTP server (``shutdown()``)."""
    result = start_http_server(port, addr=addr, registry=registry)
    return result[0] if isinstance(result, tuple) else result
