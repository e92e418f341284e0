"""The benchmark's servers, one per framework, each run in its own process.

    python -m bench.servers {zrpc,zerorpc,baseline} [--heartbeat SECONDS|none]

binds ``tcp://127.0.0.1:*``, prints ``READY <endpoint>`` on stdout, and
serves until killed (it also dies with its parent). ``aio`` and
``aio-baseline`` are served on asyncio by :mod:`bench.aio`. Every framework serves
the same methods: ``echo(x)``, ``sleep1()`` (``gevent.sleep(1)``) and
``sleep_stats()`` (how many sleep1 calls ran at once), the stream
``numbers(n)`` (not the baseline) and ``_zerorpc_ping``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import gevent

from .procs import die_with_parent, raise_nofile

__all__ = ["FRAMEWORKS", "main"]

FRAMEWORKS = ("zrpc", "zerorpc", "baseline", "aio", "aio-baseline")
#: Upper bound on a stream's length, so a bad argument cannot run forever.
MAX_STREAM = 10_000_000
ENDPOINT = "tcp://127.0.0.1:*"


class _Sleepers:
    """How many ``sleep1()`` calls run at once; the peak is what server memory is divided by."""

    now = 0
    peak = 0


def echo(x):
    return x


def sleep1():
    _Sleepers.now += 1
    if _Sleepers.now > _Sleepers.peak:
        _Sleepers.peak = _Sleepers.now
    try:
        gevent.sleep(1)
    finally:
        _Sleepers.now -= 1
    return True


def sleep_stats():
    """{"peak": most sleep1() calls at once since the last sleep_stats(), "now": running now}; resets the peak."""
    out = {"peak": _Sleepers.peak, "now": _Sleepers.now}
    _Sleepers.peak = _Sleepers.now
    return out


def _numbers(n):
    return iter(range(min(int(n), MAX_STREAM)))


def serve_zrpc(heartbeat: Optional[float], curve_secret: Optional[str] = None, metrics: bool = False) -> None:
    import zrpc

    class Service:
        def echo(self, x):
            return x

        def sleep1(self):
            return sleep1()

        def sleep_stats(self):
            return sleep_stats()

        @zrpc.stream
        def numbers(self, n):
            return _numbers(n)

    interceptors = []
    if metrics:  # what an operator would run: every call counted and timed
        from zrpc.metrics import ServerMetrics

        interceptors.append(ServerMetrics())
    server = zrpc.Server(Service(), name="bench", heartbeat=heartbeat, curve_secret_key=curve_secret,
                         interceptors=interceptors)
    if metrics:
        interceptors[0].watch(server)
    _ready(server.bind(ENDPOINT))
    server.run()


def serve_zerorpc(heartbeat: Optional[float]) -> None:
    import zerorpc
    import zmq

    class Service:
        def echo(self, x):
            return x

        def sleep1(self):
            return sleep1()

        def sleep_stats(self):
            return sleep_stats()

        @zerorpc.stream
        def numbers(self, n):
            return _numbers(n)

    server = zerorpc.Server(Service(), name="bench", heartbeat=heartbeat)
    server.bind(ENDPOINT)
    _ready(server._events._socket.getsockopt(zmq.LAST_ENDPOINT).decode())
    server.run()


def serve_baseline(heartbeat: Optional[float]) -> None:
    from .baseline import BaselineServer

    server = BaselineServer({"echo": echo, "sleep1": sleep1, "sleep_stats": sleep_stats,
                             "_zerorpc_ping": lambda: ["pong", "bench"]})
    _ready(server.bind(ENDPOINT))
    server.run()


def _ready(endpoint: str) -> None:
    sys.stdout.write(f"READY {endpoint}\n")
    sys.stdout.flush()


def _heartbeat(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "0", "off") else float(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("framework", choices=FRAMEWORKS)
    parser.add_argument("--heartbeat", type=_heartbeat, default=5.0)
    parser.add_argument("--curve-secret", default=None, help="serve with CURVE (zrpc only): the secret key, Z85")
    parser.add_argument("--metrics", action="store_true", help="serve with zrpc.metrics.ServerMetrics (zrpc only)")
    args = parser.parse_args(argv)
    die_with_parent()
    raise_nofile()
    if args.framework in ("aio", "aio-baseline"):
        from . import aio

        aio.serve(args.framework, ENDPOINT, args.heartbeat, _ready)
        return
    serve = {"zrpc": serve_zrpc, "zerorpc": serve_zerorpc, "baseline": serve_baseline}[args.framework]
    if args.curve_secret or args.metrics:
        if args.framework != "zrpc":
            parser.error("--curve-secret and --metrics are for zrpc only")
        serve_zrpc(args.heartbeat, args.curve_secret, args.metrics)
        return
    serve(args.heartbeat)


if __name__ == "__main__":
    main()
