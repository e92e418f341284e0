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
:mod:`.output` (JSON on stdout), :mod:`.serving` (``zrpc serve``),
:mod:`.tracing` (-v/-d).
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from . import calling, serving
from .parsing import UsageError
from .status import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, fail

__all__ = ["main", "SUBCOMMANDS"]

#: ``zrpc WORD ...`` runs ``SUBCOMMANDS[WORD](the rest of argv)`` -> exit status; any other
#: first word is a call (:func:`calling.run`). A new subcommand is a module with
#: ``run(argv) -> int`` (building its parser from :mod:`.parsing` and
#: :mod:`.connection`), one entry here, and a line in the usage of :mod:`.calling`.
SUBCOMMANDS: Dict[str, Callable[[List[str]], int]] = {
    "serve": serving.run,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the zrpc command line with ``argv`` (default: sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerate_unencodable_output()
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return calling.run(argv)
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
