"""Metrics on against off, in adjacent windows: ``python -m bench.metrics_ab [--rounds N] [--window S]``.

Two zrpc servers run side by side (``bench.servers zrpc`` and ``... --metrics``);
one client process calls echo sequentially on each in turn, ``window``
seconds at a time, alternating which goes first. Adjacent windows share the
machine's state, so their ratio is steadier than the main bench's (where
other frameworks' runs fall between). Prints the calls/s of each window
and the median of the per-round ratios (on / off).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from statistics import median
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _server(extra: List[str]) -> "tuple[subprocess.Popen, str]":
    proc = subprocess.Popen([sys.executable, "-m", "bench.servers", "zrpc", *extra], stdout=subprocess.PIPE,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    line = proc.stdout.readline().decode()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"server {extra} did not start")
    return proc, line.split()[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_ab")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--window", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    import zrpc

    procs = []
    try:
        off, off_ep = _server([])
        on, on_ep = _server(["--metrics"])
        procs = [off, on]
        clients = {"off": zrpc.Client(off_ep, timeout=10), "on": zrpc.Client(on_ep, timeout=10)}
        for client in clients.values():
            for _ in range(500):
                client.echo("warm")
        rates = {"off": [], "on": []}  # type: dict
        for r in range(args.rounds):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                client, calls, t0 = clients[name], 0, time.perf_counter()
                while time.perf_counter() - t0 < args.window and calls < 10_000_000:
                    client.echo("hello, world")
                    calls += 1
                rates[name].append(calls / (time.perf_counter() - t0))
        for client in clients.values():
            client.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
    print("off calls/s:", ", ".join(f"{v:,.0f}" for v in rates["off"]))
    print("on  calls/s:", ", ".join(f"{v:,.0f}" for v in rates["on"]))
    print(f"median ratio on/off: {median(b / a for a, b in zip(rates['off'], rates['on'])):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
