"""``zrpc serve``: load MODULE[:OBJECT], serve it, and stop gracefully on SIGINT/SIGTERM.

A target that cannot be imported or instantiated is a :class:`UsageError`
(exit status 2) with the cause in one line (``--traceback`` adds where).
The Server is built only after the command line and the target have been checked.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
from typing import Any, Callable, List, Tuple

from .connection import SERVER, add_connection_options, link, links, new_server
from .parsing import UsageError, add_general_options, count, help_or_version, new_parser, seconds
from .status import EXIT_OK, EXIT_STATUS_HELP
from .supervising import run_workers, worker_count_of, workers_option
from .tracing import setup_logging

__all__ = ["build_parser", "run", "grace_rules"]

DESCRIPTION = """\
Serve the public callables of a Python module, or of an object in it, over zrpc
(wire-compatible with zerorpc clients). MODULE is imported with the current
directory on sys.path; OBJECT (MODULE:OBJECT, dotted for nested attributes) may be
an object, a class (instantiated with no arguments) or a single function.
"""

EPILOG = """\
shutdown:
  SIGINT (Ctrl-C) or SIGTERM stops taking new calls and lets the calls in flight
  finish for up to --grace seconds before they are cancelled; a second signal
  cancels them at once. The exit status is then 0.

examples:
  zrpc serve --bind tcp://127.0.0.1:4242 time
  zrpc serve --bind tcp://127.0.0.1:4242 examples.hello_server:Hello
  zrpc serve --connect tcp://127.0.0.1:5555 time     (the client binds: zrpc --bind ...)
  zrpc serve --bind tcp://127.0.0.1:4242 --access-log --metrics-port 9100 time
  zrpc serve --workers auto --bind tcp://127.0.0.1:4242 examples.hello_server:Hello
                                    (one process per core; see it with: zrpc status ENDPOINT)

""" + EXIT_STATUS_HELP


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``zrpc serve``."""
    parser = new_parser(
        "zrpc serve",
        "zrpc serve [OPTIONS] (--bind ENDPOINT | --connect ENDPOINT)... MODULE[:OBJECT]",
        DESCRIPTION, EPILOG)
    parser.add_argument("target", nargs="?", metavar="MODULE[:OBJECT]", help=argparse.SUPPRESS)
    server = parser.add_argument_group("server")
    server.add_argument("--name", default=None,
                        help="service name (default: the module's or class's name)")
    server.add_argument("--pool-size", type=count, default=None, metavar="N",
                        help="run at most N calls at once; others wait in line (default: no limit)")
    server.add_argument("--grace", type=seconds, default=10.0, metavar="SECONDS",
                        help="on SIGINT/SIGTERM, let calls in flight finish for up to SECONDS"
                             " (default: 10)")
    # Internal: set by zrpc.Workers on the processes it starts (trust the router's caller frame).
    server.add_argument("--behind-router", action="store_true", help=argparse.SUPPRESS)
    server.add_argument("--metrics-dir", default=None, help=argparse.SUPPRESS)  # where a worker writes its counts
    server.add_argument("--workers", type=workers_option, default=None, metavar="N|auto",
                        help="serve with N processes behind the endpoints, a call's events all to the"
                             " same one (auto: one per core; default: this process alone)")
    observe = parser.add_argument_group("observing")
    observe.add_argument("--access-log", action="store_true",
                         help="log one line per call on stderr: peer, method, outcome, duration, bytes")
    observe.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                         help="serve Prometheus metrics at http://HOST:PORT/metrics"
                              " (needs prometheus_client: pip install zrpc[metrics])")
    observe.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                         help="the address --metrics-port listens on (default: 127.0.0.1)")
    add_connection_options(parser, SERVER)
    add_general_options(parser)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return port


def _interceptors(args: argparse.Namespace) -> Tuple[List[Any], Any]:
    """The interceptors --access-log and --metrics-port ask for, and the metrics (or None)."""
    interceptors: List[Any] = []
    metrics = None
    if args.metrics_port is not None or args.metrics_dir is not None:
        ServerMetrics = metrics_module().ServerMetrics
        # a worker's counts go to its supervisor (--metrics-dir), not to a registry of its own
        metrics = ServerMetrics() if args.metrics_port is not None else ServerMetrics(registry=None)
        interceptors.append(metrics)
    if args.access_log:
        from ..accesslog import AccessLog

        logging.getLogger("zrpc.access").setLevel(logging.INFO)  # the CLI's zrpc handler prints it
        interceptors.append(AccessLog())
    return interceptors, metrics


def metrics_module() -> Any:
    """zrpc.metrics, or a UsageError saying how to install what it needs."""
    try:
        from .. import metrics
    except ImportError as exc:
        raise UsageError(f"--metrics-port needs prometheus_client ({exc}): pip install 'zrpc[metrics]'") from None
    return metrics


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``zrpc serve`` as ``args`` say, until a signal stops the server; return the exit status."""
    if help_or_version(parser, args):
        return EXIT_OK
    if not args.target:
        raise UsageError("no MODULE[:OBJECT] to serve, e.g. zrpc serve --bind tcp://127.0.0.1:4242 time")
    if "://" in args.target:
        raise UsageError(f"{args.target!r} is an endpoint: give it with --bind (or --connect)")
    if not (args.bind or args.connect):
        raise UsageError("nowhere to serve: give --bind ENDPOINT (e.g. tcp://127.0.0.1:4242) "
                         "or --connect ENDPOINT")
    setup_logging(args.verbose, args.debug)
    if args.behind_router and (args.connect or any(not e.startswith("ipc://") for e in args.bind)):
        raise UsageError("--behind-router is for the workers zrpc.Workers starts, on a private ipc endpoint")
    workers = worker_count_of(args)
    if workers > 1:
        return run_workers(args, workers)  # each worker loads the target; this process routes
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like zerorpc: serve modules from where you stand
    obj = _load(args.target, args.traceback or args.debug)

    from ..core.methods import public_methods

    if not public_methods(obj):
        print(f"zrpc: warning: {args.target} has no public callables to serve", file=sys.stderr)

    interceptors, metrics = _interceptors(args)
    server = new_server(obj, args, name=args.name, pool_size=args.pool_size, interceptors=interceptors)
    if args.behind_router:
        server._behind_router = True  # its one peer is the router, which names each caller
    try:
        link(server, links(args.connect, args.bind))
        if metrics is not None:
            metrics.watch(server)
        if args.metrics_port is not None:
            serve_http_metrics(args)
        if args.metrics_dir is not None:
            return _run_worker_with_metrics(server, args, metrics)
        return _run_server(server, args)
    finally:
        server.close()


def serve_http_metrics(args: argparse.Namespace) -> None:
    """Serve the global registry's /metrics on --metrics-host:--metrics-port (a UsageError if it cannot)."""
    try:
        http = metrics_module().serve_metrics(args.metrics_port, args.metrics_host)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}") from None
    print(f"metrics on http://{args.metrics_host}:{http.server_port}/metrics", file=sys.stderr, flush=True)


def _run_worker_with_metrics(server: Any, args: argparse.Namespace, metrics: Any) -> int:
    """A worker's run: every SNAPSHOT_INTERVAL, and once more at the end, its counts go to --metrics-dir."""
    import gevent

    module = metrics_module()
    path = os.path.join(args.metrics_dir, f"{os.getpid()}.json")

    def write() -> None:
        try:
            module.write_snapshot(metrics, path)
        except OSError as exc:  # the supervisor's directory is gone: it is going too
            logging.getLogger("zrpc.metrics").debug("cannot write %s: %s", path, exc)

    def keep_writing() -> None:
        while True:
            write()
            gevent.sleep(module.SNAPSHOT_INTERVAL)

    writer = gevent.spawn(keep_writing)
    try:
        return _run_server(server, args)
    finally:
        writer.kill()
        write()


def _load(spec: str, show_traceback: bool) -> Any:
    """MODULE[:OBJECT] -> the object to serve (a class is instantiated, a function wrapped)."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise UsageError(f"{spec!r}: MODULE is missing (MODULE[:OBJECT])")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name or "." not in module_name or attr:
            raise UsageError(f"cannot import {module_name!r}: {exc}"
                             f" (the current directory {os.getcwd()} is on sys.path)") from None
        # zerorpc's spelling, package.module.Object: retry as package.module:Object.
        module_name, attr = module_name.rsplit(".", 1)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc2:
            raise UsageError(f"cannot import {spec!r}: {exc2}") from None
        except Exception as exc2:
            raise UsageError(_import_failure(module_name, exc2, show_traceback)) from None
    except Exception as exc:
        raise UsageError(_import_failure(module_name, exc, show_traceback)) from None
    obj: Any = module
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(_import_failure(f"{attr}()", exc, show_traceback, "creating")) from None
    elif inspect.isroutine(obj) and attr:
        obj = {attr.rsplit(".", 1)[-1]: obj}
    return obj


def _import_failure(what: str, exc: BaseException, show_traceback: bool, verb: str = "importing") -> str:
    message = f"{verb} {what!r} failed: {type(exc).__name__}: {exc}"
    if show_traceback:
        import traceback

        message += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    else:
        message += " (--traceback shows where)"
    return message


def grace_rules(stop: Callable[[float], None], grace: float, what: str = "") -> Callable[[int], None]:
    """The shutdown rules as a signal callback: the first signal stops with ``grace`` seconds
    for the calls in flight (``stop(grace)``), any later one cancels them (``stop(0)``)."""
    signals: List[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        name = signal.Signals(signum).name
        if len(signals) == 1:
            print(f"zrpc: {name}: stopping{what}; calls in flight have {grace:g}s to finish",
                  file=sys.stderr, flush=True)
            stop(grace)
        else:
            print(f"zrpc: {name} again: cancelling the calls in flight", file=sys.stderr, flush=True)
            stop(0)

    return on_signal


def _run_server(server: Any, args: argparse.Namespace) -> int:
    import gevent

    for endpoint in server.endpoints:
        print(f"serving {args.target} on {endpoint}", file=sys.stderr, flush=True)
    on_signal = grace_rules(server.stop, args.grace)
    handlers = [gevent.signal_handler(sig, on_signal, sig) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        server.run()  # the caller's close() flushes the last replies before the process exits
    finally:
        for handler in handlers:
            handler.cancel()
    print("zrpc: stopped", file=sys.stderr, flush=True)
    return EXIT_OK
