"""``zrpc subscribe``, ``zrpc publish`` and ``zrpc push``: one-way events from the command line.

``subscribe`` prints each event received as one JSON line
``{"event": NAME, "args": [...], "kwargs": {...}}``; ``publish`` and
``push`` send one event and exit. Every node is built only after the
command line has been checked, through :class:`zrpc.Subscriber`,
:class:`zrpc.Publisher` and :class:`zrpc.Pusher`; this module never speaks
the protocol itself.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Tuple

from .connection import Links, link, links
from .output import Output
from .parsing import (UsageError, add_general_options, count, new_parser, parse_kwargs, parse_value, seconds,
                      version)
from .status import EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, fail
from .tracing import print_event, setup_logging

__all__ = ["Subscribe", "Publish", "Push"]

_ENDPOINTS_HELP = """\
endpoints:
  ENDPOINT is tcp://HOST:PORT or ipc://PATH, connected to; --connect and --bind
  (both repeatable) replace it. Either side of an event link may bind.
"""

_ARGS_HELP = """\
arguments:
  Each ARG is sent as a string; with -j/--json as the JSON it holds. -k NAME=VALUE
  (repeatable) adds a keyword argument: only zrpc receivers take them (a zerorpc
  receiver logs an error on its side, and this command cannot know).
"""


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("-c", "--connect", action="append", default=[], metavar="ENDPOINT",
                       help="connect to ENDPOINT (repeatable)")
    group.add_argument("-b", "--bind", action="append", default=[], metavar="ENDPOINT",
                       help="bind ENDPOINT and let the peers connect (repeatable)")


def _links(words: List[str], args: argparse.Namespace) -> Tuple[Links, List[str]]:
    """[ENDPOINT] REST... -> the links to make and REST (an endpoint contains "://", a name never does)."""
    words = list(words)
    connect = list(args.connect)
    if words and "://" in words[0]:
        connect.insert(0, words.pop(0))
    if not connect and not args.bind:
        raise UsageError("no endpoint: give ENDPOINT (e.g. tcp://127.0.0.1:4242) first, "
                         "or --connect/--bind ENDPOINT")
    return links(connect, args.bind), words


def _version_or_help(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Optional[int]:
    """The exit status if the command line only asks for the version or help (or gives nothing)."""
    if args.version:
        print(version())
        return EXIT_OK
    if args.help:
        parser.print_help()
        return EXIT_OK
    if not args.words and not args.connect and not args.bind:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return None

class _Subscribe:
    """``zrpc subscribe [OPTIONS] ENDPOINT [NAME...]``."""

    DESCRIPTION = """\
Subscribe to the zrpc or zerorpc Publishers at ENDPOINT and print each event as
one line of JSON: {"event": NAME, "args": [...], "kwargs": {...}}. With NAMEs,
print only those events. Runs until Ctrl-C, or until --count events were printed.
A zrpc publisher numbers its events: events this subscriber missed (it was too
slow, and PUB dropped them at the high-water mark) are reported on stderr.
"""

    EPILOG = _ENDPOINTS_HELP + """
examples:
  zrpc subscribe tcp://127.0.0.1:4243                 every event
  zrpc subscribe tcp://127.0.0.1:4243 price --count 1  the next "price" event
  zrpc subscribe --bind tcp://127.0.0.1:4243           publishers connect here
"""

    def build_parser(self) -> argparse.ArgumentParser:
        parser = new_parser("zrpc subscribe", "zrpc subscribe [OPTIONS] ENDPOINT [NAME...]",
                            self.DESCRIPTION, self.EPILOG)
        parser.add_argument("words", nargs="*", metavar="ENDPOINT NAME", help=argparse.SUPPRESS)
        group = parser.add_argument_group("subscribe")
        group.add_argument("-n", "--count", type=count, default=None, metavar="N",
                           help="exit after printing N events")
        group.add_argument("-t", "--timeout", type=seconds, default=0.0, metavar="SECONDS",
                           help="exit with status 3 if no event came for SECONDS (default: 0, wait forever)")
        _endpoint_options(parser)
        add_general_options(parser)
        return parser

    def run(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
        done = _version_or_help(parser, args)
        if done is not None:
            return done
        endpoints, names = _links(args.words, args)
        bad = [n for n in names if "://" in n]
        if bad:
            raise UsageError(f"{bad[0]!r} looks like an endpoint where NAME was expected "
                             "(use --connect for several endpoints)")
        setup_logging(args.verbose, args.debug)

        import gevent
        from gevent.event import Event

        import zrpc

        out = Output(sys.stdout, raw=False, indent=None)
        printed = [0]
        done, heard = Event(), Event()

        def show(name: str, event_args: list, kwargs: dict) -> None:
            if done.is_set():
                return
            out.item({"event": name, "args": event_args, "kwargs": kwargs})
            printed[0] += 1
            heard.set()
            if args.count is not None and printed[0] >= args.count:
                done.set()

        subscriber = zrpc.Subscriber({}, names=names or None, fallback=show, pool_size=1,
                                     trace=print_event if args.debug else None)
        interrupt = _interrupt_main_on_sigint()
        try:
            link(subscriber, endpoints, announce_binds=False)
            subscriber.start()
            while not done.is_set():
                heard.clear()
                if not gevent.wait([done, heard], timeout=args.timeout or None):
                    return fail(EXIT_TIMEOUT, f"no event within {args.timeout:g}s")
            return EXIT_OK
        finally:
            interrupt.cancel()
            subscriber.close()


class _Send:
    """``zrpc publish|push [OPTIONS] ENDPOINT METHOD [ARG...]``: send one event."""

    def __init__(self, command: str) -> None:
        self.command = command

    @property
    def description(self) -> str:
        if self.command == "publish":
            return """\
Publish one event, METHOD(ARG...), to every zrpc or zerorpc Subscriber at ENDPOINT,
then exit. It waits (up to --timeout) until a subscriber's subscription has
arrived, since PUB sends to nobody before that: status 3 if none came.
"""
        return """\
Push one event, METHOD(ARG...), to one zrpc or zerorpc Puller at ENDPOINT, then
exit. It waits up to --timeout for a connected puller with room: status 3 if none
took it (then nothing was sent).
"""

    def build_parser(self) -> argparse.ArgumentParser:
        parser = new_parser(f"zrpc {self.command}",
                            f"zrpc {self.command} [OPTIONS] ENDPOINT METHOD [ARG...]",
                            self.description, _ARGS_HELP + "\n" + _ENDPOINTS_HELP + f"""
examples:
  zrpc {self.command} tcp://127.0.0.1:4243 price EUR -j 1.08
  zrpc {self.command} -j tcp://127.0.0.1:4243 resize '[640, 480]' -k quality=90
""")
        parser.add_argument("words", nargs="*", metavar="ENDPOINT METHOD ARG", help=argparse.SUPPRESS)
        group = parser.add_argument_group(self.command)
        group.add_argument("-j", "--json", action="store_true",
                           help="parse each ARG and -k VALUE as JSON (default: send strings)")
        group.add_argument("-k", "--kwarg", action="append", default=[], metavar="NAME=VALUE",
                           help="a keyword argument (repeatable; zrpc receivers only)")
        group.add_argument("-t", "--timeout", type=seconds, default=10.0, metavar="SECONDS",
                           help="give up after SECONDS without a " +
                                ("subscriber" if self.command == "publish" else "puller") + " (default: 10)")
        _endpoint_options(parser)
        add_general_options(parser)
        return parser

    def run(self, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
        done = _version_or_help(parser, args)
        if done is not None:
            return done
        endpoints, words = _links(args.words, args)
        if not words:
            raise UsageError(f"no METHOD: zrpc {self.command} ENDPOINT METHOD [ARG...]")
        method, raw_args = words[0], words[1:]
        if "://" in method:
            raise UsageError(f"{method!r} looks like an endpoint where METHOD was expected "
                             "(use --connect for several endpoints)")
        event_args = [parse_value(text, args.json, f"argument {i}") for i, text in enumerate(raw_args, 1)]
        kwargs = parse_kwargs(args.kwarg, args.json)
        timeout = args.timeout or 10.0
        setup_logging(args.verbose, args.debug)

        import zrpc

        trace = print_event if args.debug else None
        if self.command == "publish":
            sender: Any = zrpc.Publisher(trace=trace)
        else:
            sender = zrpc.Pusher(timeout=timeout, trace=trace)
        interrupt = _interrupt_main_on_sigint()
        linger: Optional[float] = None
        try:
            link(sender, endpoints, announce_binds=False)
            if self.command == "publish" and not sender.wait_for_subscribers(1, timeout):
                return fail(EXIT_TIMEOUT, f"no subscriber within {timeout:g}s: nothing was published")
            try:
                sender.emit(method, *event_args, **kwargs)
            except zrpc.TimeoutExpired as exc:
                return fail(EXIT_TIMEOUT, f"{exc}: nothing was pushed")
            except TypeError as exc:  # msgpack cannot carry a value (e.g. an integer over 64 bits)
                raise UsageError(str(exc)) from None
            linger = timeout  # let zmq deliver it: close() returns as soon as it has
            return EXIT_OK
        finally:
            interrupt.cancel()
            sender.close(linger)


def _interrupt_main_on_sigint() -> Any:
    from .calling import _interrupt_main_on_sigint as interrupt

    return interrupt()


Subscribe = _Subscribe()
Publish = _Send("publish")
Push = _Send("push")
