"""The ``zrpc`` command line: call a zrpc/zerorpc service, list it, or serve a Python module.

This package owns argument parsing, output formatting and exit statuses. It
never speaks the protocol itself: every remote interaction goes through
:class:`zrpc.Client` and :class:`zrpc.Server`, which are constructed only
after the arguments have been parsed and checked. A user mistake always
ends in one ``zrpc: ...`` line on stderr and a documented exit status
(:mod:`.status`), never in a traceback of this package.

One module a job: :mod:`.parsing` (shared options, values), :mod:`.connection`
(endpoints and the options that build the Client/Server), :mod:`.calling`
(``zrpc ENDPOINT ...``), :mod:`.service` (reading a service's description),
:mod:`.output` (JSON on stdout), :mod:`.serving` (``zrpc serve``; :mod:`.supervising`
for ``--workers``), :mod:`.server_status` (``zrpc status``),
:mod:`.tracing` (-v/-d).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Optional, Protocol, Sequence

from . import calling, events, security, server_status, serving
from .parsing import UsageError
from .status import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, fail

__all__ = ["main", "Subcommand", "SUBCOMMANDS"]


class Subcommand(Protocol):
    """What main() needs of a subcommand: usually a module of this package."""

    def build_parser(self) -> argparse.ArgumentParser:
        """Its parser (see :mod:`.parsing` and :mod:`.connection` for the shared options)."""

    def run(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
        """Do what the parsed ``args`` say (``parser`` prints the help); return the exit status."""


#: ``zrpc WORD ...``: the subcommand WORD, given the rest of the command line; any other
#: first word is a call (:mod:`.calling`). A new subcommand is a module with
#: ``build_parser()`` and ``run(parser, args)``, one entry here, and a line in the
#: usage of :mod:`.calling`.
SUBCOMMANDS: Dict[str, Subcommand] = {
    "serve": serving,
    "status": server_status,
    "keygen": security.Keygen,
    "subscribe": events.Subscribe, "publish": events.Publish, "push": events.Push,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the zrpc command line with ``argv`` (default: sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerate_unencodable_output()
    try:
        if argv and argv[0] in SUBCOMMANDS:
            command, argv = SUBCOMMANDS[argv[0]], argv[1:]
        else:
            command = calling
        parser = command.build_parser()
        return command.run(parser, parser.parse_intermixed_args(argv))
    except UsageError as exc:
        return fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted")
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _tolerate_unencodable_output() -> None:
    # Non-ASCII is printed as is; a terminal that cannot show it gets escapes, not a crash.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except Exception:
                pass


def _silence_stdout() -> None:
    # After EPIPE, Python would complain again while flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
