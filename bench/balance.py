"""Balancing over three servers, one of them slow: least calls in flight against round robin.

    python -m bench.balance [--runs 3] [--duration 3] [--callers 32] [--slow-ms 50] [--base-ms 1]

Three zrpc server processes on 127.0.0.1; every call of ``echo`` takes
``--base-ms`` on each, plus ``--slow-ms`` on the third. For every run a fresh
client process (gevent, one ``zrpc.Client`` over the three endpoints,
``--callers`` greenlets in a closed loop) measures calls/s, once with the
client's own policy (least in flight) and once with round robin (what zrpc
did before: the same client with the ordering replaced by a plain rotation).
Runs alternate between the two, on the same three servers; the table shows
medians, the share of calls the slow server got, and the ratio of medians.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("least-in-flight", "round-robin")


def _serve(endpoint: str, delay: float) -> None:
    import gevent

    import zrpc

    def echo(x: Any) -> Any:
        gevent.sleep(delay)
        return x

    server = zrpc.Server({"echo": echo}, name="bench")
    server.bind(endpoint)
    print("READY", flush=True)
    server.run()


def _client(policy: str, duration: float, callers: int, endpoints: List[str]) -> Dict[str, Any]:
    import gevent

    import zrpc
    from zrpc.core.balancing import Backend, Balancer

    class RoundRobin(Balancer):
        """The same servers taken strictly in turn, whatever their calls in flight."""

        def order(self, retry: bool = False) -> List[Backend]:
            backends = [b for b in self.backends if not b.removed]
            start = self._rotation % len(backends)
            return backends[start:] + backends[:start]

    client = zrpc.Client(endpoints, timeout=60)
    if policy == "round-robin":
        client._session.balancer.__class__ = RoundRobin
    for _ in range(30):
        client.echo(1)
    backends = client._session.balancer.backends
    sent_before = [b.sent for b in backends]
    calls = 0
    deadline = time.monotonic() + duration

    def caller() -> None:
        nonlocal calls
        while time.monotonic() < deadline:
            client.echo(calls)
            calls += 1

    started = time.monotonic()
    gevent.joinall([gevent.spawn(caller) for _ in range(callers)])
    elapsed = time.monotonic() - started
    sent = [b.sent - before for b, before in zip(backends, sent_before)]
    client.close()
    return {"calls_per_s": calls / elapsed, "slow_share": sent[-1] / max(sum(sent), 1)}


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run(runs: int, duration: float, callers: int, slow_ms: float, base_ms: float,
        log: Any = sys.stderr) -> Dict[str, Dict[str, List[float]]]:
    """Start the three servers, alternate the policies ``runs`` times; every run's figures by policy."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    servers = []
    endpoints = []
    try:
        for delay_ms in (base_ms, base_ms, base_ms + slow_ms):
            endpoint = _free_endpoint()
            proc = subprocess.Popen([sys.executable, "-m", "bench.balance", "_serve", endpoint,
                                     str(delay_ms / 1000)], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
            servers.append(proc)
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("a server did not start")
            endpoints.append(endpoint)
        results: Dict[str, Dict[str, List[float]]] = {p: {"calls_per_s": [], "slow_share": []} for p in POLICIES}
        for number in range(runs):
            for policy in POLICIES:  # interleaved: neighbours are compared
                out = subprocess.run([sys.executable, "-m", "bench.balance", "_client", policy, str(duration),
                                      str(callers), *endpoints],
                                     capture_output=True, text=True, timeout=120 + duration, cwd=ROOT, env=env)
                if out.returncode != 0:
                    raise RuntimeError(f"{policy} client failed:\n{out.stderr[-2000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                for key, value in result.items():
                    results[policy][key].append(value)
                print(f"  run {number + 1} {policy}: {result['calls_per_s']:,.0f} calls/s, "
                      f"slow server took {result['slow_share']:.1%}", file=log, flush=True)
        return results
    finally:
        for proc in servers:
            proc.kill()
            proc.communicate(timeout=10)


def table(results: Dict[str, Dict[str, List[float]]], callers: int, slow_ms: float, base_ms: float) -> str:
    """The markdown table of medians and the ratio least-in-flight / round robin."""
    med = {p: {k: statistics.median(v) for k, v in r.items()} for p, r in results.items()}
    ratio = med["least-in-flight"]["calls_per_s"] / med["round-robin"]["calls_per_s"]
    lines = [f"3 servers, calls of {base_ms:g} ms, one server {slow_ms:g} ms slower; {callers} callers, "
             f"{len(results['round-robin']['calls_per_s'])} runs each",
             "", "| policy | calls/s | slow server's share |", "|---|---:|---:|"]
    for policy in POLICIES:
        lines.append(f"| {policy} | {med[policy]['calls_per_s']:,.0f} | {med[policy]['slow_share']:.1%} |")
    lines.append(f"| least-in-flight / round-robin | {ratio:.2f}x | |")
    return "\n".join(lines)


def main(argv: Any = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_serve":
        _serve(argv[1], float(argv[2]))
        return
    if argv and argv[0] == "_client":
        result = _client(argv[1], float(argv[2]), int(argv[3]), argv[4:])
        print(json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--slow-ms", type=float, default=50.0)
    parser.add_argument("--base-ms", type=float, default=1.0)
    args = parser.parse_args(argv)
    results = run(args.runs, args.duration, args.callers, args.slow_ms, args.base_ms)
    print(table(results, args.callers, args.slow_ms, args.base_ms))


if __name__ == "__main__":
    main()
