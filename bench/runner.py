"""The orchestrator: plan the cases, run each in fresh processes, print one table.

For every run of every case it starts a server process (``bench.servers``)
and a client process (``bench.workloads``), both on 127.0.0.1, collects the
client's one-line JSON result and kills both. Runs are interleaved across
frameworks (run 1 of zrpc, zerorpc, baseline, then run 2...) so that the
ratios compare measurements taken seconds apart. This process never runs an
event loop; it only starts, waits for and kills children, and every child
is killed on any exit (error, Ctrl-C, SIGTERM), and dies with it anyway.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import report
from .procs import Children, raise_nofile
from .report import Row

__all__ = ["main", "plan", "rows_for", "WORKLOAD_NAMES"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD_NAMES = ("seq", "conc", "sleep", "big", "stream", "batch", "idle")
FRAMEWORKS = report.GEVENT_FRAMEWORKS
#: seq, conc and sleep (up to 10,000 calls) also run on asyncio: zrpc.aio and its own baseline.
WITH_AIO = report.FRAMEWORKS
#: Seconds a server gets to print READY.
SERVER_START_TIMEOUT = 30.0
#: Every call's timeout: generous, so that slowness shows as time, not as failures.
CALL_TIMEOUT = 60.0


@dataclass
class Case:
    """One measurement to repeat: a workload with its parameters, on some frameworks."""

    id: str
    workload: str  # the function in bench.workloads
    params: Dict[str, Any]
    frameworks: Sequence[str] = FRAMEWORKS
    heartbeat: Optional[float] = 5.0
    runs: Optional[int] = None  # None: --runs
    #: per-framework overrides of params and runs, e.g. zerorpc's time box at 50,000 calls
    overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: cases of one group are interleaved run by run (a ratio between them compares neighbours)
    group: Optional[str] = None
    #: run server and client with CURVE encryption (a fresh key pair per run; zrpc only)
    curve: bool = False
    #: serve with zrpc.metrics.ServerMetrics as interceptor (zrpc only)
    metrics: bool = False

    def params_for(self, framework: str) -> Dict[str, Any]:
        p = {"timeout": CALL_TIMEOUT, "heartbeat": self.heartbeat, "budget": 120, **self.params}
        p.update({k: v for k, v in self.overrides.get(framework, {}).items() if k != "runs"})
        return p

    def runs_for(self, framework: str, default: int) -> int:
        runs = self.runs or default
        cap = self.overrides.get(framework, {}).get("runs")
        return min(runs, cap) if cap else runs


def plan(quick: bool, only: Sequence[str] = WORKLOAD_NAMES) -> List[Case]:
    """The cases to run, in order. ``quick`` shrinks every count and duration and skips the biggest cases."""
    duration = 0.5 if quick else 2.0
    few = 1 if quick else 3  # memory and wall-time cases are steady; 3 runs suffice
    cases: List[Case] = []
    if "seq" in only:
        p = {"duration": duration, "max_calls": 1_000_000}
        cases.append(Case("seq", "seq", p, frameworks=WITH_AIO, group="seq"))
        cases.append(Case("seq-hb0", "seq", p, frameworks=("zrpc", "zerorpc"), heartbeat=None, group="seq"))
        cases.append(Case("seq-curve", "seq", p, frameworks=("zrpc",), curve=True, group="seq"))
        cases.append(Case("seq-metrics", "seq", p, frameworks=("zrpc",), metrics=True, group="seq"))
    if "conc" in only:
        p = {"duration": duration, "callers": 64, "max_calls": 10_000_000}
        cases.append(Case("conc", "conc", p, frameworks=WITH_AIO, group="conc"))
        cases.append(Case("conc-curve", "conc", p, frameworks=("zrpc",), curve=True, group="conc"))
        cases.append(Case("conc-metrics", "conc", p, frameworks=("zrpc",), metrics=True, group="conc"))
    if "sleep" in only:
        for n in (1_000,) if quick else (1_000, 10_000, 50_000):
            overrides = {}
            if n >= 50_000:
                # zerorpc needs ~4 greenlets per call on each side: time-box it, run it once.
                overrides = {"zerorpc": {"wall_limit": 30.0, "runs": 1}}
            cases.append(Case(f"sleep-{n}", "sleep", {"n": n, "wall_limit": 30.0, "budget": 90},
                              frameworks=WITH_AIO if n <= 10_000 else FRAMEWORKS, runs=few, overrides=overrides))
    if "big" in only:
        for label, size in (("1MiB", 1 << 20),) if quick else (("1MiB", 1 << 20), ("16MiB", 16 << 20)):
            cases.append(Case(f"big-{label}", "big", {"size": size, "duration": duration, "max_calls": 100_000}))
    if "stream" in only:
        n = 50_000 if quick else 1_000_000
        streamers = ("zrpc", "zerorpc")
        cases.append(Case("stream-fast", "stream_fast", {"n": n, "time_limit": 2.0 if quick else 12.0},
                          frameworks=streamers, runs=few))
        cases.append(Case("stream-slow", "stream_slow",
                          {"n": 1_000_000, "duration": 1.0 if quick else 3.0, "interval": 0.002},
                          frameworks=streamers, runs=few))
    if "batch" in only:
        cases.append(Case("batch", "batch", {"n": 1_000 if quick else 10_000, "time_limit": 30.0}))
    if "idle" in only:
        cases.append(Case("idle", "idle", {"n": 100 if quick else 1_000, "time_limit": 60.0},
                          runs=few))
    return cases


def rows_for(cases: Sequence[Case]) -> List[Row]:
    """The table's rows for the cases that were planned, in order."""
    ids = {c.id for c in cases}
    rows: List[Row] = []
    if "seq" in ids:
        rows += [
            Row("seq", "calls/s (higher is better)", "seq", "calls_per_s", "rate", frameworks=WITH_AIO),
            Row("seq", "p50 latency µs", "seq", "p50_us", "us", frameworks=WITH_AIO),
            Row("seq", "p99 latency µs", "seq", "p99_us", "us", frameworks=WITH_AIO),
            Row("seq", "server CPU µs/call", "seq", "server_cpu_us_per_call", "us", frameworks=WITH_AIO),
            Row("seq", "  of which Python thread", "seq", "server_main_cpu_us_per_call", "us", frameworks=WITH_AIO),
            Row("seq", "client CPU µs/call", "seq", "client_cpu_us_per_call", "us", frameworks=WITH_AIO),
        ]
    if "seq-hb0" in ids:
        rows += [
            Row("seq heartbeat=None", "calls/s", "seq-hb0", "calls_per_s", "rate",
                frameworks=("zrpc", "zerorpc")),
            Row("seq heartbeat cost", "calls/s hb=5 ÷ hb=None (1.0 = free)", "seq", "calls_per_s", "ratio",
                over_case="seq-hb0", frameworks=("zrpc", "zerorpc"), key="seq.heartbeat_ratio"),
        ]
    if "conc" in ids:
        rows += [
            Row("conc 64 callers", "calls/s", "conc", "calls_per_s", "rate", frameworks=WITH_AIO),
            Row("conc 64 callers", "server CPU µs/call", "conc", "server_cpu_us_per_call", "us",
                frameworks=WITH_AIO),
            Row("conc 64 callers", "  of which Python thread", "conc", "server_main_cpu_us_per_call", "us",
                frameworks=WITH_AIO),
        ]
    # A variant of seq or conc on zrpc alone, and its rate over the plain case's, run by run.
    variants = (("seq-curve", "seq CURVE", "CURVE ÷ plain", "curve"),
                ("conc-curve", "conc 64 callers CURVE", "CURVE ÷ plain", "curve"),
                ("seq-metrics", "seq metrics on", "metrics ÷ none", "metrics"),
                ("conc-metrics", "conc 64 callers metrics on", "metrics ÷ none", "metrics"))
    for case_id, w, over, kind in variants:
        if case_id in ids:
            plain = case_id.split("-")[0]
            rows += [
                Row(w, "calls/s", case_id, "calls_per_s", "rate", frameworks=("zrpc",)),
                Row(w, f"calls/s {over} (1.0 = free)", case_id, "calls_per_s", "ratio",
                    over_case=plain, frameworks=("zrpc",), key=f"{plain}.{kind}_ratio"),
            ]
            if kind == "curve":
                rows.append(Row(w, "server CPU µs/call", case_id, "server_cpu_us_per_call", "us",
                                frameworks=("zrpc",)))
    for case in cases:
        if case.workload == "sleep":
            n = case.params["n"]
            w = f"sleep(1) x {n:,}"
            fws = case.frameworks
            rows += [
                Row(w, "wall s until all done", case.id, "wall_s", "s", frameworks=fws),
                Row(w, "failures", case.id, "failures", "count", ratios=False, frameworks=fws),
                Row(w, "server peak RSS MiB", case.id, "server_peak_kib", "kib_mib", frameworks=fws),
                Row(w, "most calls in flight at once", case.id, "max_in_flight", "count", frameworks=fws),
                Row(w, "server KiB per call in flight", case.id, "kib_per_call", "kib", frameworks=fws),
            ]
    for case in cases:
        if case.workload == "big":
            w = f"big echo {case.id[4:]}"
            rows += [
                Row(w, "MiB/s (payload, one way)", case.id, "mib_per_s", "mib"),
                Row(w, "p50 latency ms", case.id, "p50_ms", "ms"),
            ]
    if "stream-fast" in ids:
        n = next(c for c in cases if c.id == "stream-fast").params["n"]
        rows.append(Row(f"stream {n:,} items", "items/s, fast reader", "stream-fast", "items_per_s",
                        "rate", frameworks=("zrpc", "zerorpc")))
    if "stream-slow" in ids:
        w = "stream slow reader"
        sf = ("zrpc", "zerorpc")
        rows += [
            Row(w, "server RSS growth KiB (flat = ~0)", "stream-slow", "server_growth_kib", "kib",
                frameworks=sf, ratios=False),
            Row(w, "client RSS growth KiB (flat = ~0)", "stream-slow", "client_growth_kib", "kib",
                frameworks=sf, ratios=False),
            Row(w, "server peak RSS MiB", "stream-slow", "server_peak_kib", "kib_mib", frameworks=sf),
            Row(w, "client peak RSS MiB", "stream-slow", "client_peak_kib", "kib_mib", frameworks=sf),
        ]
    if "batch" in ids:
        n = next(c for c in cases if c.id == "batch").params["n"]
        w = f"batch {n:,}"
        rows += [
            Row(w, "calls/s sequential", "batch", "seq_calls_per_s", "rate"),
            Row(w, "calls/s batched*", "batch", "batch_calls_per_s", "rate"),
            Row(w, "batched ÷ sequential", "batch", "speedup", "ratio"),
        ]
    if "idle" in ids:
        n = next(c for c in cases if c.id == "idle").params["n"]
        w = f"idle {n:,} clients"
        rows += [
            Row(w, "server KiB per idle client", "idle", "server_kib_per_client", "kib"),
            Row(w, "client KiB per client", "idle", "client_kib_per_client", "kib"),
        ]
    return rows


# -- running children ---------------------------------------------------------------
class Failure(Exception):
    pass


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["BENCH_PARENT"] = str(os.getpid())
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def _tail(path: str, limit: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Runner:
    def __init__(self, children: Children, log_dir: str, verbose: bool = True) -> None:
        self.children = children
        self.log_dir = log_dir
        self.verbose = verbose
        self._count = 0

    def _start_server(self, framework: str, heartbeat: Optional[float],
                      curve_secret: Optional[str] = None, metrics: bool = False) -> Tuple[subprocess.Popen, str, str]:
        self._count += 1
        err_path = os.path.join(self.log_dir, f"server-{self._count}-{framework}.err")
        curve = ["--curve-secret", curve_secret] if curve_secret else []
        if metrics:
            curve.append("--metrics")
        with open(err_path, "wb") as err:
            proc = self.children.add(subprocess.Popen(
                [sys.executable, "-m", "bench.servers", framework,
                 "--heartbeat", "none" if heartbeat is None else str(heartbeat), *curve],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                cwd=ROOT, env=_env(), start_new_session=True,
            ))
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.children.kill(proc)
                    raise Failure(f"{framework} server did not start in {SERVER_START_TIMEOUT:g}s: {_tail(err_path)}")
                line = proc.stdout.readline().decode()  # type: ignore[union-attr]
                if not line:
                    self.children.kill(proc)
                    raise Failure(f"{framework} server exited: {_tail(err_path)}")
                if line.startswith("READY "):
                    return proc, line.split()[1], err_path

    def measure(self, case: Case, framework: str) -> Dict[str, Any]:
        """One run of ``case`` on ``framework`` in fresh server and client processes."""
        params = case.params_for(framework)
        secret = None
        if case.curve:
            import zmq

            public, secret_key = zmq.curve_keypair()
            secret, params["curve_server_key"] = secret_key.decode(), public.decode()
        server, endpoint, server_err = self._start_server(framework, case.heartbeat, secret, case.metrics)
        client = None
        try:
            err_path = server_err.replace("server-", "client-")
            with open(err_path, "wb") as err:
                client = self.children.add(subprocess.Popen(
                    [sys.executable, "-m", "bench.workloads", case.workload, framework, endpoint,
                     str(server.pid), json.dumps(params)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                    cwd=ROOT, env=_env(), start_new_session=True,
                ))
            try:
                out, _ = client.communicate(timeout=params["budget"] + 30)
            except subprocess.TimeoutExpired:
                raise Failure(f"client did not finish within {params['budget'] + 30}s") from None
            for line in out.decode(errors="replace").splitlines():
                if line.startswith("RESULT "):
                    return json.loads(line[7:])
            lines = [x for x in _tail(err_path).splitlines() if x.strip()]
            raise Failure(f"client exited {client.returncode}: {' | '.join(lines[-3:])}")
        finally:
            self.children.kill(client)
            self.children.kill(server)


def _summary(result: Dict[str, Any]) -> str:
    keys = ("calls_per_s", "wall_s", "failures", "kib_per_call", "mib_per_s", "items_per_s",
            "server_growth_kib", "speedup", "server_kib_per_client")
    parts = []
    for k in keys:
        if k in result:
            v = result[k]
            parts.append(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _groups(cases: Sequence[Case]) -> List[List[Case]]:
    """Consecutive cases with the same ``group`` together; every other case alone."""
    groups: List[List[Case]] = []
    for case in cases:
        if case.group and groups and groups[-1][0].group == case.group:
            groups[-1].append(case)
        else:
            groups.append([case])
    return groups


def run_all(cases: Sequence[Case], runs: int, runner: Runner,
            failures: Optional[List[str]] = None) -> Dict[Tuple[str, str], List[Optional[Dict[str, Any]]]]:
    """Run every case ``runs`` times (or its own count): run i of every framework, then run i + 1.

    Cases of one group are interleaved the same way; odd runs go in reverse
    order, so drift and warm-up favour no one. A run that fails
    leaves None in its slot and a line in ``failures``.
    """
    results: Dict[Tuple[str, str], List[Optional[Dict[str, Any]]]] = {}
    for group in _groups(cases):
        n_runs = max(c.runs_for(fw, runs) for c in group for fw in c.frameworks)
        schedule = []
        for i in range(n_runs):
            one_run = [(i, c, fw) for c in group for fw in c.frameworks if i < c.runs_for(fw, runs)]
            # Alternate the order run by run, so that no framework always goes first or last.
            schedule += one_run if i % 2 == 0 else one_run[::-1]
        for i, case, fw in schedule:
            t0 = time.monotonic()
            try:
                result: Optional[Dict[str, Any]] = runner.measure(case, fw)
                note = _summary(result)  # type: ignore[arg-type]
            except Failure as exc:
                result, note = None, f"FAILED: {exc}"
                if failures is not None:
                    failures.append(f"{case.id} {fw} run {i + 1}: {exc}")
            results.setdefault((case.id, fw), []).append(result)
            if runner.verbose:
                print(f"[{case.id} run {i + 1}/{n_runs}] {fw:<8} {time.monotonic() - t0:5.1f}s  {note}",
                      file=sys.stderr, flush=True)
    return results


def _versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("pyzmq", "gevent", "msgpack", "zerorpc", "zrpc"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    try:
        import zmq

        out["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    return out


def _zrpc_revision() -> str:
    """The commit of the zrpc tree measured, with "+dirty" if zrpc/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "zrpc"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def _meta(args: argparse.Namespace, runs: int, revision: str, elapsed: Optional[float] = None) -> Dict[str, Any]:
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "quick": args.quick,
        "runs": runs,
        "zrpc_revision": revision,
        **_versions(),
    }
    if elapsed is not None:
        meta["elapsed_s"] = round(elapsed, 1)
    return meta


def _format_meta(meta: Dict[str, Any]) -> str:
    return (f"{meta['date']}, {meta['cpus']} cores ({meta['machine']}, Linux {meta['kernel']}), "
            f"python {meta['python']}, pyzmq {meta['pyzmq']} (libzmq {meta.get('libzmq', '?')}), "
            f"gevent {meta['gevent']}, msgpack {meta['msgpack']}, zerorpc {meta['zerorpc']}, "
            f"zrpc {meta['zrpc_revision']}; "
            f"median of up to {meta['runs']} runs{' (--quick)' if meta['quick'] else ''}"
            + (f"; took {meta['elapsed_s']:g} s" if "elapsed_s" in meta else ""))


NOTES = """\
Each cell is the median over runs; each ratio is the median of run-by-run ratios. Ratios divide
zrpc (or aio) by the other framework whatever the metric: above 1 is better for rates, below 1 is
better for latency, CPU and memory. n/a: not applicable (the baseline has no streams and no heartbeats)
or not measured. aio: zrpc.aio client and server on asyncio; aio-baseline: a hand-written asyncio
pyzmq RPC (one reader task dispatching by id, the same msgpack frames; bench/aio.py), measured in
the same runs as the gevent frameworks (seq, conc, sleep up to 10,000 calls).
Every server and client runs in its own fresh process over tcp on 127.0.0.1.
Server CPU counts every thread of the server process; "of which Python thread" leaves out
libzmq's I/O thread (CPU times are read from /proc in 10 ms ticks).
* batched: zrpc's client.batch(); zerorpc and the baseline have no batch API, so their row sends
  the same calls all at once (async) and then waits for all. zerorpc at 50,000 sleeping calls is
  run once and time-boxed to 30 s; calls not done by then count as failures."""


def _handle_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark zrpc against zerorpc 0.6.3 and a hand-written zmq.green baseline, "
                    "and zrpc.aio against a hand-written asyncio baseline.")
    parser.add_argument("--quick", action="store_true",
                        help="small counts, 1 run, no 50,000-call or 16 MiB cases (well under a minute)")
    parser.add_argument("--runs", type=int, default=None, help="runs per case (default 5, 1 with --quick)")
    parser.add_argument("--only", default=",".join(WORKLOAD_NAMES),
                        help=f"comma-separated workloads among {','.join(WORKLOAD_NAMES)}")
    parser.add_argument("--json", metavar="FILE", help="also write every run, the table and the targets as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as a Markdown file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(only) - set(WORKLOAD_NAMES))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose among {', '.join(WORKLOAD_NAMES)}")
    runs = args.runs or (1 if args.quick else 5)
    if runs < 1 or runs > 50:
        parser.error("--runs must be between 1 and 50")

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _handle_sigterm)
    signal.signal(signal.SIGHUP, _handle_sigterm)
    raise_nofile()
    children = Children()
    failures: List[str] = []
    revision = _zrpc_revision()  # before running: the tree may change while we measure
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="zrpc-bench-") as log_dir:
            cases = plan(args.quick, only)
            results = run_all(cases, runs, Runner(children, log_dir, verbose=not args.quiet), failures)
    finally:
        children.kill_all()
    elapsed = time.monotonic() - t0

    table = report.build_table(results, rows_for(cases))
    checked = report.check_targets(table)
    meta = _meta(args, runs, revision, elapsed)
    if _zrpc_revision() != revision:
        meta["zrpc_revision"] = f"{revision} (changed to {_zrpc_revision()} during the run)"
    parts = [_format_meta(meta), report.format_table(table), NOTES, report.format_targets(checked)]
    if failures:
        parts.append("Failed runs (left out of the medians):\n\n" + "\n".join(f"- {f}" for f in failures))
    text = "\n\n".join(parts)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("# zrpc benchmark results\n\n" + text + "\n")
    if args.json:
        records = [{"case": c, "framework": fw, "run": i + 1, "result": r}
                   for (c, fw), rs in results.items() for i, r in enumerate(rs)]
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "table": table, "targets": checked, "failures": failures,
                       "runs": records}, f, indent=1)
    return 0
