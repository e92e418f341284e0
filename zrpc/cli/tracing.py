"""What -v/--verbose and -d/--debug show on stderr: zrpc's log, and (debug) every event.

The event lines come from the ``trace=`` hook of :class:`zrpc.Client` and
:class:`zrpc.Server`; this module only formats them. It never patches zrpc.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["setup_logging", "print_event"]

_ARROWS = {"send": ">>", "recv": "<<"}
_MAX_ARGS_TEXT = 300


def setup_logging(verbose: bool, debug: bool) -> None:
    """Send the ``zrpc`` logger to stderr: WARNING, INFO with ``verbose``, DEBUG with ``debug``."""
    logger = logging.getLogger("zrpc")
    for old in [h for h in logger.handlers if getattr(h, "_zrpc_cli", False)]:
        logger.removeHandler(old)  # main() may run more than once in a process
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("zrpc: %(levelname)s %(name)s: %(message)s"))
    handler._zrpc_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def print_event(direction: str, header: Any, name: Any, args: Any) -> None:
    """A ``trace=`` hook: ``zrpc: >> NAME ARGS id=.. [response_to=..]`` (``<<`` when received)."""
    text = repr(list(args) if isinstance(args, tuple) else args)
    if len(text) > _MAX_ARGS_TEXT:
        text = text[:_MAX_ARGS_TEXT - 3] + "..."
    ids = ""
    if isinstance(header, dict):
        ids = f" id={_short_id(header.get('message_id'))}"
        if header.get("response_to") is not None:
            ids += f" response_to={_short_id(header.get('response_to'))}"
    print(f"zrpc: {_ARROWS.get(direction, direction)} {name} {text}{ids}", file=sys.stderr, flush=True)


def _short_id(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value)
    return text[:8] if len(text) > 8 else text
