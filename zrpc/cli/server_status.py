"""``zrpc status ENDPOINT``: what a multi-worker server (``zrpc serve --workers``) is doing.

Calls the router's ``_zrpc_status`` and prints one line for the server and
one per worker (pid, connected, calls in flight, served, restarts); ``--json``
prints the router's answer as is. A server started without ``--workers``
has no router: it is reported as a single process (exit status 0).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict

from .calling import failure
from .connection import CLIENT, add_connection_options, link, links, new_client
from .output import Output
from .parsing import UsageError, add_general_options, help_or_version, new_parser, seconds
from .status import EXIT_OK, EXIT_STATUS_HELP
from .tracing import setup_logging

__all__ = ["build_parser", "run"]

METHOD = "_zrpc_status"

DESCRIPTION = """\
Show the workers of a server started with zrpc serve --workers: for each, its
process id, whether it is connected, its calls in flight, the calls it served
and how often it was restarted.
"""

EPILOG = """\
examples:
  zrpc status tcp://127.0.0.1:4242
  zrpc status --json tcp://127.0.0.1:4242

""" + EXIT_STATUS_HELP


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``zrpc status``."""
    parser = new_parser("zrpc status", "zrpc status [OPTIONS] ENDPOINT", DESCRIPTION, EPILOG)
    parser.add_argument("endpoint", nargs="?", metavar="ENDPOINT", help=argparse.SUPPRESS)
    group = parser.add_argument_group("status")
    group.add_argument("--json", action="store_true", help="print the status as one line of JSON")
    group.add_argument("-t", "--timeout", type=seconds, default=10.0, metavar="SECONDS",
                       help="give up after SECONDS without an answer (default: 10)")
    add_connection_options(parser, CLIENT)
    add_general_options(parser)
    return parser


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Ask the server at ENDPOINT for its status and print it; return the exit status."""
    if help_or_version(parser, args):
        return EXIT_OK
    connect = ([args.endpoint] if args.endpoint else []) + list(args.connect)
    if not connect and not args.bind:
        raise UsageError("no endpoint: zrpc status tcp://HOST:PORT")
    if args.endpoint and "://" not in args.endpoint:
        raise UsageError(f"{args.endpoint!r} is not an endpoint: expected tcp://HOST:PORT or ipc://PATH")
    setup_logging(args.verbose, args.debug)

    import zrpc

    client = new_client(args, timeout=args.timeout or None)
    try:
        link(client, links(connect, args.bind), announce_binds=True)
        out = Output(sys.stdout, raw=False, indent=None)
        try:
            status = client.call(METHOD)
        except zrpc.RemoteError as exc:
            if exc.name != "NameError":
                raise
            out.text(f"{client.endpoints[0]}: a single server process (not started with --workers)")
            return EXIT_OK
        if args.json:
            out.result(status)
        else:
            out.text(format_status(client.endpoints[0], status))
        return EXIT_OK
    except zrpc.ZrpcError as exc:
        return failure(exc, args, METHOD)
    finally:
        client.close()


def _readiness(worker: Dict[str, Any]) -> str:
    """yes (serving), no (not connected), or silent (busy, yet said nothing for two intervals: frozen?)."""
    if worker.get("silent"):
        return "silent"
    return "yes" if worker.get("ready") else "no"


def format_status(endpoint: str, status: Dict[str, Any]) -> str:
    """The status as text: a line for the server, then a table of its workers."""
    workers = status.get("workers") or []
    state = "stopping" if status.get("stopping") else "serving"
    lines = [f"{endpoint}: {status.get('target', '?')}, {len(workers)} workers (pid {status.get('pid', '?')}), "
             f"{state}; {status.get('in_flight', 0):,} calls in flight, {status.get('served', 0):,} served"]
    header = ("worker", "pid", "ready", "in flight", "served", "restarts")
    rows = [header] + [(str(w.get("worker", "?")), str(w.get("pid") or "-"), _readiness(w),
                        f"{w.get('in_flight', 0):,}", f"{w.get('served', 0):,}", str(w.get("restarts", 0)))
                       for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
