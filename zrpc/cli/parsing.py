"""Command-line parsing shared by every subcommand: the parser class, the option groups
all of them take, value types, and ARG / -k NAME=VALUE parsing.

A mistake in the command line is raised as :class:`UsageError` (one line,
exit status 2), never as argparse's own exit. Nothing here imports zrpc's
driver, gevent or zmq: parsing finishes before any socket exists.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, NoReturn

__all__ = ["UsageError", "Parser", "new_parser", "add_general_options", "help_or_version", "seconds", "count",
           "parse_value", "parse_kwargs", "version"]


class UsageError(Exception):
    """A mistake in the command line; reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() always returns a status."""

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" in message:
            message += " (put -- before arguments that start with a dash)"
        raise UsageError(f"{message}\nusage: {self.format_usage().partition(': ')[2].strip()}")


def new_parser(prog: str, usage: str, description: str, epilog: str) -> Parser:
    """A subcommand's parser: help texts kept as written, -h/--help left to add_general_options."""
    return Parser(prog=prog, usage=usage, description=description, epilog=epilog,
                  formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)


def add_general_options(parser: argparse.ArgumentParser) -> None:
    """-h, -V, -v, -d and --traceback, which every subcommand takes."""
    group = parser.add_argument_group("general")
    group.add_argument("-h", "--help", action="store_true",
                       help="show this help and exit (after METHOD: that method's documentation)")
    group.add_argument("-V", "--version", action="store_true", help="print the zrpc version and exit")
    group.add_argument("-v", "--verbose", action="store_true", help="log what zrpc does (INFO)")
    group.add_argument("-d", "--debug", action="store_true",
                       help="log at DEBUG and print every event sent and received to stderr")
    group.add_argument("--traceback", action="store_true",
                       help="also print the remote traceback of a remote error"
                            " (serve: the traceback of an import error)")


def help_or_version(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Print the help (-h) or the version (-V) if asked; True if so (the command is then done)."""
    if args.help:
        parser.print_help()
        return True
    if args.version:
        print(version())
        return True
    return False


def seconds(text: str) -> float:
    """argparse type: a duration in seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value != value or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be zero or more")
    return value


def count(text: str) -> int:
    """argparse type: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def parse_value(text: str, as_json: bool, what: str) -> Any:
    """An ARG or -k VALUE: the string itself, or (``as_json``) the JSON it holds."""
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {text!r}: {exc} "
                         "(strings need quotes with -j: '\"text\"')") from None


def parse_kwargs(items: List[str], as_json: bool) -> Dict[str, Any]:
    """-k NAME=VALUE items -> {NAME: value}; each NAME an identifier, given once."""
    kwargs: Dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"-k expects NAME=VALUE with NAME a Python identifier, got {item!r}")
        if name in kwargs:
            raise UsageError(f"keyword argument {name!r} given twice")
        kwargs[name] = parse_value(value, as_json, f"keyword argument {name!r}")
    return kwargs


def version() -> str:
    """What -V/--version prints."""
    from .. import __version__

    return f"zrpc {__version__}"
