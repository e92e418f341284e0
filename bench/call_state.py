"""What per-call state costs on the gevent server: ``python -m bench.call_state [--rounds N] [--calls N]``.

A method that sets a ``gevent.local`` value retires its call greenlet (the
next call gets a fresh one: no state leaks between calls); a method that
does not reuses it. One process serves and calls both over tcp on
127.0.0.1, alternating which goes first each round, sequentially and with
``calls`` concurrent calls at once; prints the calls/s medians and their
ratio (gevent.local / plain).
"""
from __future__ import annotations

import argparse
import time
from statistics import median
from typing import Dict, List, Optional, Sequence

import gevent.local

import zrpc

_LOCAL = gevent.local.local()


def _plain() -> int:
    return 1


def _sets_local() -> int:
    _LOCAL.value = 1
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.call_state")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    args = parser.parse_args(argv)
    methods = ("plain", "local")
    with zrpc.Server({"plain": _plain, "local": _sets_local}) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        client = zrpc.Client(endpoint, timeout=30)
        try:
            seq: Dict[str, List[float]] = {m: [] for m in methods}
            conc: Dict[str, List[float]] = {m: [] for m in methods}
            for r in range(args.rounds):
                for name in methods if r % 2 == 0 else methods[::-1]:
                    method = getattr(client, name)
                    started = time.perf_counter()
                    for _ in range(args.calls):
                        method()
                    seq[name].append(args.calls / (time.perf_counter() - started))
                    started = time.perf_counter()
                    for future in [method.call_async() for _ in range(args.calls)]:
                        future.get(30)
                    conc[name].append(args.calls / (time.perf_counter() - started))
        finally:
            client.close()
    for label, rates in (("sequential", seq), (f"{args.calls} at once", conc)):
        plain, local = median(rates["plain"]), median(rates["local"])
        print(f"{label}: plain {plain:,.0f} calls/s, gevent.local {local:,.0f} calls/s, ratio {local / plain:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
