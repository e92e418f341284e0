"""Serving on every core: ``zrpc serve --workers`` against one process, and the router's hop.

    python -m bench.scale [--runs 3] [--duration 3] [--only cpu,seq,conc,big]

Setups (each a fresh process tree on 127.0.0.1; the client is a process of its own):

* ``single``: ``zrpc serve`` of :class:`Service`, one process (what ``--workers 1`` is).
* ``router+1``: :class:`zrpc.Workers` with one worker: the router's hop and nothing else.
* ``workers=2``: ``zrpc serve --workers 2``.
* ``2 servers``: two plain ``zrpc serve`` processes on two ports, the client
  balancing over both (``cpu`` only): what two cores give with no router in
  front, the ceiling ``workers=2`` is held against on this machine.

Workloads: ``cpu`` (64 concurrent callers of a method doing ~1 ms of pure
Python, calls/s), ``seq`` (one caller of ``echo``), ``conc`` (64 callers of
``echo``), ``big`` (echo of 1 MiB, MiB/s one way). Runs are interleaved
across setups and every ratio is the median of run-by-run ratios, so a
ratio compares measurements taken seconds apart on this noisy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUPS = ("single", "router+1", "workers=2", "2 servers")
WORKLOADS = ("cpu", "seq", "conc", "big")
CALLERS = 64
BIG = 1 << 20
TARGET = "bench.scale:Service"
#: (workload, setup, over setup, what it shows, target or None): the ratios printed.
RATIOS = (
    ("cpu", "workers=2", "single", "--workers 2 ÷ one process (target >= 1.7)", 1.7),
    ("cpu", "workers=2", "router+1", "--workers 2 ÷ router with one worker", None),
    ("cpu", "2 servers", "single", "ceiling: 2 servers, no router ÷ one", None),
    ("cpu", "workers=2", "2 servers", "--workers 2 ÷ the ceiling", None),
    ("seq", "router+1", "single", "router hop: router+1 ÷ single", None),
    ("conc", "router+1", "single", "router hop: router+1 ÷ single", None),
    ("big", "router+1", "single", "router hop: router+1 ÷ single", None),
)


class Service:
    """What the bench servers serve."""

    def echo(self, x: Any) -> Any:
        return x

    def burn(self, n: int) -> int:
        """``n`` rounds of pure Python arithmetic (the orchestrator calibrates n to ~1 ms)."""
        x = 0
        for i in range(int(n)):
            x += i * i
        return x & 1


def calibrate(ms: float = 1.0) -> int:
    """Rounds of :meth:`Service.burn` that take ``ms`` milliseconds here (best of a few tries)."""
    rounds = 20_000
    best = min(_timed_burn(rounds) for _ in range(5))
    return max(1, int(rounds * ms / 1000 / best))


def _timed_burn(rounds: int) -> float:
    started = time.perf_counter()
    Service().burn(rounds)
    return time.perf_counter() - started


# -- the server side ------------------------------------------------------------------
def _router_one(endpoint: str) -> None:
    """A Workers router with one worker (the Python API: the CLI's --workers 1 is one process)."""
    import zrpc

    workers = zrpc.Workers(TARGET, 1, heartbeat=5.0)
    signal.signal(signal.SIGTERM, lambda *_: workers.stop(0))
    workers.bind(endpoint)
    try:
        workers.run()
    finally:
        workers.close()


def _start(setup: str, endpoint: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT}
    if setup == "router+1":
        command = [sys.executable, "-m", "bench.scale", "_router", endpoint]
    else:
        workers = ["--workers", "2"] if setup == "workers=2" else []
        command = [sys.executable, "-m", "zrpc", "serve", *workers, "--bind", endpoint, TARGET]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _servers(setup: str) -> Tuple[List[str], List[subprocess.Popen]]:
    """The endpoints the client calls, and the process trees behind them."""
    endpoints = [_free_endpoint() for _ in range(2 if setup == "2 servers" else 1)]
    return endpoints, [_start("single" if setup == "2 servers" else setup, e) for e in endpoints]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the supervisor and its workers
            proc.wait(timeout=10)


# -- the client side -------------------------------------------------------------------
def _client(workload: str, endpoints: List[str], duration: float, rounds: int, workers: int,
            server_pids: List[int]) -> Dict[str, Any]:
    import gevent

    import zrpc

    from .procs import cpu_seconds

    deadline = time.monotonic() + 30
    for endpoint in endpoints:  # each server may still be starting
        probe = zrpc.Client(endpoint, timeout=60)
        while True:
            try:
                probe.with_options(timeout=1).echo(1)
                break
            except zrpc.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise
        probe.close()
    client = zrpc.Client(endpoints if len(endpoints) > 1 else endpoints[0], timeout=60)
    if workers > 1:  # every worker up (each answers a status line), so no run measures a start-up
        while not all(w["ready"] for w in client.call("_zrpc_status")["workers"]):
            if time.monotonic() > deadline:
                raise RuntimeError("workers not ready after 30 s")
            gevent.sleep(0.05)
    for _ in range(200):
        client.echo(1)
    calls = 0
    payload = b"\x01" * BIG
    method, arg = {"cpu": ("burn", rounds), "big": ("echo", payload)}.get(workload, ("echo", 1))
    callers = 1 if workload in ("seq", "big") else CALLERS
    end = time.monotonic() + duration

    def caller() -> None:
        nonlocal calls
        while time.monotonic() < end:
            client.call(method, arg)
            calls += 1

    cpu = sum(cpu_seconds(pid) for pid in server_pids)
    own = cpu_seconds(os.getpid())
    started = time.monotonic()
    gevent.joinall([gevent.spawn(caller) for _ in range(callers)], raise_error=True)
    elapsed = time.monotonic() - started
    cpu = sum(cpu_seconds(pid) for pid in server_pids) - cpu
    own = cpu_seconds(os.getpid()) - own
    client.close()
    rate = calls / elapsed
    # The CPU of the process(es) the client talks to: the server(s), or the router (not its workers).
    return {"value": rate * BIG / (1 << 20) if workload == "big" else rate, "calls": calls,
            "front_cpu_us": cpu / calls * 1e6, "client_cpu_us": own / calls * 1e6}


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def measure(setup: str, workload: str, duration: float, rounds: int) -> Dict[str, Any]:
    """One run: a fresh server tree and a client process: {"value": calls/s (MiB/s for big),
    "front_cpu_us": CPU per call of the process the client talks to}."""
    endpoints, servers = _servers(setup)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.scale", "_client", workload, ",".join(endpoints),
                              str(duration), str(rounds), "2" if setup == "workers=2" else "1",
                              ",".join(str(s.pid) for s in servers)],
                             capture_output=True, text=True, timeout=duration + 120, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": ROOT})
        if out.returncode != 0:
            raise RuntimeError(f"{setup} {workload} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        for server in servers:
            _stop(server)


def report(results: Dict[str, Dict[str, List[float]]], cpu: Dict[str, Dict[str, List[float]]],
           client_cpu: Dict[str, Dict[str, List[float]]], rounds: int) -> str:
    """The table: medians per setup, then the ratios (median of run-by-run ratios)."""
    lines = [f"{'workload':9} {'metric':26} " + " ".join(f"{s:>10}" for s in SETUPS)]
    for workload, by_setup in results.items():
        for metric, table in (("MiB/s" if workload == "big" else "calls/s", by_setup),
                              ("front process CPU µs/call", cpu[workload]),
                              ("client CPU µs/call", client_cpu[workload])):
            lines.append(f"{workload:9} {metric:26} " + " ".join(
                f"{statistics.median(table[s]):>10,.1f}" if s in table else f"{'-':>10}" for s in SETUPS))
    lines.append("")
    for workload, setup, over, what, target in RATIOS:
        if workload not in results or setup not in results[workload] or over not in results[workload]:
            continue
        ratios = [a / b for a, b in zip(results[workload][setup], results[workload][over])]
        ratio = statistics.median(ratios)
        verdict = "" if target is None else ("  met" if ratio >= target else "  NOT MET")
        lines.append(f"{workload:5} {what:45} {ratio:5.2f}x  (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
                     f"{verdict}")
    lines.append("\nfront process: the one the client talks to (the server; for router+1 and workers=2 the"
                 " router alone, not its workers; for 2 servers both).")
    lines.append(f"cpu: {CALLERS} callers of burn({rounds:,}), ~1 ms of pure Python per call; "
                 f"{os.cpu_count()} cores. --workers 1 is the single process itself (ratio 1.00 by construction).")
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> None:  # type: ignore[assignment]
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_router":
        _router_one(argv[1])
        return
    if argv and argv[0] == "_client":
        workload, endpoints, duration = argv[1], argv[2].split(","), float(argv[3])
        rounds, workers, server_pids = int(argv[4]), int(argv[5]), [int(p) for p in argv[6].split(",")]
        print(json.dumps(_client(workload, endpoints, duration, rounds, workers, server_pids)), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    args = parser.parse_args(argv)
    only = [w for w in args.only.split(",") if w]
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose among {', '.join(WORKLOADS)}")
    rounds = calibrate()
    results: Dict[str, Dict[str, List[float]]] = {}
    cpu: Dict[str, Dict[str, List[float]]] = {}
    client_cpu: Dict[str, Dict[str, List[float]]] = {}
    for workload in only:
        setups = SETUPS if workload == "cpu" else SETUPS[:2]
        for run in range(args.runs):
            order = setups if run % 2 == 0 else setups[::-1]  # nobody always goes first
            for setup in order:
                result = measure(setup, workload, args.duration, rounds)
                results.setdefault(workload, {}).setdefault(setup, []).append(result["value"])
                cpu.setdefault(workload, {}).setdefault(setup, []).append(result["front_cpu_us"])
                client_cpu.setdefault(workload, {}).setdefault(setup, []).append(result["client_cpu_us"])
                print(f"  {workload} run {run + 1} {setup}: {result['value']:,.1f}"
                      f" (front CPU {result['front_cpu_us']:.1f} µs/call)", file=sys.stderr, flush=True)
    print(report(results, cpu, client_cpu, rounds))


if __name__ == "__main__":
    main()
