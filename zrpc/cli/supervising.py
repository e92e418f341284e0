"""``zrpc serve --workers N``: the options and the run of a multi-process server.

:mod:`.serving` parses the command line and checks it; this module turns it
into a :class:`zrpc.Workers` (the same server options, security at the
router, each worker a ``zrpc serve`` of the target) and runs it until a
signal drains it, with the same ``--grace`` rules as one process.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, List

from .connection import link, links
from .parsing import count
from .status import EXIT_OK, EXIT_USAGE, fail

__all__ = ["workers_option", "worker_count_of", "run_workers"]


def workers_option(text: str) -> Any:
    """argparse type of ``--workers``: ``auto``, or a whole number of at least 1."""
    return text if text == "auto" else count(text)


def worker_count_of(args: argparse.Namespace) -> int:
    """How many processes ``--workers`` asks for (1 without it)."""
    from ..workers import worker_count

    return worker_count(args.workers) if args.workers is not None else 1


def _serve_options(args: argparse.Namespace) -> List[str]:
    """The options every worker's ``zrpc serve`` gets too."""
    flags = (("-v", args.verbose), ("-d", args.debug), ("--traceback", args.traceback),
             ("--access-log", getattr(args, "access_log", False)))
    return [flag for flag, on in flags if on]


def run_workers(args: argparse.Namespace, count: int) -> int:
    """Serve ``args.target`` with ``count`` worker processes until SIGINT/SIGTERM; return the exit status."""
    from . import security
    from ..workers import Workers, WorkersFailed

    from .serving import grace_rules, metrics_module, serve_http_metrics  # (serving imports this module)

    with_metrics = getattr(args, "metrics_port", None) is not None
    metrics = metrics_module() if with_metrics else None  # before any process starts: a UsageError if missing
    workers = Workers(args.target, count, name=args.name, heartbeat=args.heartbeat or None,
                      pool_size=args.pool_size, grace=args.grace, serve_options=_serve_options(args),
                      metrics=with_metrics, **security.server_kwargs(args))

    on_signal = grace_rules(workers.stop, args.grace, f" {count} workers")
    previous = {sig: signal.signal(sig, lambda signum, frame: on_signal(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        link(workers, links(args.connect, args.bind))
        if metrics is not None:  # one port for all: the workers' counts summed, and the router's
            metrics.WorkersMetrics(workers)
            serve_http_metrics(args)
        for endpoint in workers.endpoints:
            print(f"serving {args.target} on {endpoint} with {count} workers", file=sys.stderr, flush=True)
        try:
            workers.run()
        except WorkersFailed as exc:
            return fail(EXIT_USAGE, f"{exc} (see its error above)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        workers.close()
    print("zrpc: stopped", file=sys.stderr, flush=True)
    return EXIT_OK
