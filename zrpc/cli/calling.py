"""``zrpc [OPTIONS] ENDPOINT [METHOD [ARG...]]``: call a method, receive a stream, list a
service or show a method's help; and which exit status each failure ends in.

The Client is built only after the whole command line has been checked, so a
usage mistake never touches the network. Results go to stdout through
:class:`Output`, failures to stderr as one ``zrpc: ...`` line.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from .connection import CLIENT, Links, add_connection_options, link, links, new_client
from .output import Output
from .parsing import (UsageError, add_general_options, new_parser, parse_kwargs, parse_value, seconds,
                      version)
from .service import describe_service
from .status import (EXIT_KWARGS, EXIT_LOST, EXIT_OK, EXIT_PROTOCOL, EXIT_REMOTE, EXIT_STATUS_HELP,
                     EXIT_TIMEOUT, EXIT_USAGE, fail)
from .tracing import setup_logging

__all__ = ["build_parser", "run", "failure"]

DESCRIPTION = """\
Call METHOD on the zrpc or zerorpc service at ENDPOINT and print its result as JSON.
Without METHOD, list the service's methods; with METHOD --help, show that method's
documentation. Results go to stdout, errors to stderr.
"""

EPILOG = """\
arguments:
  Each ARG is sent as a string; with -j/--json each ARG is parsed as JSON instead
  (-j 42 is a number, -j '"42"' a string, -j '[1, 2]' a list). Keyword arguments
  are given with -k NAME=VALUE (repeatable); VALUE follows the same rule as ARG.
  Keyword arguments need a zrpc server: a plain zerorpc server cannot take them
  (exit status 5). Put -- before ARGs that start with a dash: zrpc EP m -- -x.

output:
  A result is printed as one line of JSON (non-ASCII kept; --indent N pretty-prints).
  A stream prints one JSON line per item as it arrives, or one JSON array with
  --array. bytes are not JSON: they are printed as a string when they are valid
  UTF-8, else as the JSON string of their repr: b"\\x89" prints "b'\\\\x89'". --raw prints
  str results without quotes and writes bytes results to stdout as they are.

endpoints:
  ENDPOINT is tcp://HOST:PORT, ipc://PATH (or any zmq endpoint). --connect and
  --bind (both repeatable) replace ENDPOINT; with --bind the server connects to
  the client (zrpc serve --connect ...).

serving:
  zrpc serve --bind tcp://127.0.0.1:4242 MODULE[:OBJECT]   (see zrpc serve --help)

examples:
  zrpc tcp://127.0.0.1:4242                      list the service
  zrpc tcp://127.0.0.1:4242 hello zrpc           -> "Hello, zrpc!"
  zrpc -j tcp://127.0.0.1:4242 add 10 20         -> 30
  zrpc tcp://127.0.0.1:4242 search -k last_name=Python
  zrpc tcp://127.0.0.1:4242 count 5 -j --array   -> [0, 1, 2, 3, 4]
  zrpc tcp://127.0.0.1:4242 add --help           the method's documentation

""" + EXIT_STATUS_HELP


def build_parser() -> argparse.ArgumentParser:
    """The parser of a call (also the CLI's top-level help)."""
    parser = new_parser(
        "zrpc",
        "zrpc [OPTIONS] ENDPOINT [METHOD [ARG...]]\n"
        "       zrpc [OPTIONS] --connect ENDPOINT [METHOD [ARG...]]\n"
        "       zrpc serve [OPTIONS] --bind ENDPOINT MODULE[:OBJECT]\n"
        "       zrpc status [OPTIONS] ENDPOINT",
        DESCRIPTION, EPILOG)
    parser.add_argument("words", nargs="*", metavar="ENDPOINT METHOD ARG", help=argparse.SUPPRESS)
    call = parser.add_argument_group("call")
    call.add_argument("-j", "--json", action="store_true",
                      help="parse each ARG and -k VALUE as JSON (default: send strings)")
    call.add_argument("-k", "--kwarg", action="append", default=[], metavar="NAME=VALUE",
                      help="a keyword argument (repeatable; needs a zrpc server)")
    call.add_argument("-t", "--timeout", type=seconds, default=30.0, metavar="SECONDS",
                      help="give up after SECONDS without a reply (for streams: between items;"
                           " 0 waits forever; default: 30)")
    output = parser.add_argument_group("output")
    output.add_argument("-a", "--array", action="store_true",
                        help="print a stream as one JSON array instead of one line per item")
    output.add_argument("-r", "--raw", action="store_true",
                        help="print str results without quotes, write bytes results as they are")
    output.add_argument("--indent", type=int, default=None, metavar="N",
                        help="pretty-print a (non-stream) result with N spaces of indentation")
    add_connection_options(parser, CLIENT)
    add_general_options(parser)
    return parser


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run a call, a listing or a method's help as ``args`` say; return the exit status."""
    if args.version:
        print(version())
        return EXIT_OK
    endpoints, method, raw_args = _split_words(args)
    if args.help and method is None:
        parser.print_help()
        return EXIT_OK
    if not endpoints:
        if not args.words and not args.kwarg:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        raise UsageError("no endpoint: give ENDPOINT (e.g. tcp://127.0.0.1:4242) first, "
                         "or --connect/--bind ENDPOINT")
    if method is None and (raw_args or args.kwarg):
        raise UsageError("arguments given without a METHOD")
    call_args = [parse_value(text, args.json, f"argument {i}") for i, text in enumerate(raw_args, 1)]
    call_kwargs = parse_kwargs(args.kwarg, args.json)
    if args.indent is not None and args.indent < 0:
        raise UsageError("--indent must be zero or more")
    setup_logging(args.verbose, args.debug)

    import zrpc

    client = new_client(args, timeout=args.timeout or None)
    interrupt = _interrupt_main_on_sigint()
    try:
        link(client, endpoints, announce_binds=True)
        out = Output(sys.stdout, raw=args.raw, indent=args.indent)
        if method is None:
            return _list_service(client, out)
        if args.help:
            return _method_help(client, method, out)
        return _invoke(client, method, call_args, call_kwargs, args, out)
    except zrpc.ZrpcError as exc:
        return failure(exc, args, method)
    finally:
        interrupt.cancel()
        client.close()


def failure(exc: Exception, args: argparse.Namespace, method: Optional[str]) -> int:
    """Report a zrpc error met while calling ``method`` as one line; return its exit status."""
    import zrpc

    if isinstance(exc, zrpc.KeywordArgumentsUnsupported):
        return fail(EXIT_KWARGS, str(exc))
    if isinstance(exc, zrpc.RemoteError):
        if args.traceback and exc.traceback:
            sys.stderr.write("remote traceback:\n" + exc.traceback.rstrip("\n") + "\n")
        if exc.name == "NameError" and exc.msg == method:
            return fail(EXIT_REMOTE, f"remote NameError: the server has no method {method!r} "
                                     "(list them with: zrpc ENDPOINT)")
        return fail(EXIT_REMOTE, f"remote {exc}")
    if isinstance(exc, zrpc.TimeoutExpired):
        return fail(EXIT_TIMEOUT, f"{exc} (is the server up? a slow method needs a longer --timeout)")
    if isinstance(exc, zrpc.LostRemote):
        return fail(EXIT_LOST, str(exc))
    if isinstance(exc, zrpc.AuthenticationFailed):
        from .security import auth_failed

        return auth_failed(exc)
    if isinstance(exc, zrpc.ProtocolError):
        return fail(EXIT_PROTOCOL, f"bad reply from the server: {exc}")
    return fail(EXIT_PROTOCOL, f"{type(exc).__name__}: {exc}")


def _interrupt_main_on_sigint() -> Any:
    """Ctrl-C raises KeyboardInterrupt in the main greenlet, quietly.

    Left to Python, SIGINT may land in the gevent hub, which prints
    "KeyboardInterrupt" and a timestamp before passing it on.
    """
    import gevent
    from greenlet import getcurrent

    main_greenlet = getcurrent()
    hub = gevent.get_hub()

    def on_sigint() -> None:
        hub.loop.run_callback(main_greenlet.throw, KeyboardInterrupt)

    return gevent.signal_handler(signal.SIGINT, on_sigint)


def _split_words(args: argparse.Namespace) -> Tuple[Links, Optional[str], List[str]]:
    """[ENDPOINT] [METHOD [ARG...]] -> ([("connect"|"bind", endpoint)...], method, args).

    The first word is an endpoint exactly when it contains "://" (a method
    name never does), so ENDPOINT may be left out when --connect/--bind is given.
    """
    words = list(args.words)
    endpoints = list(args.connect)
    if words and "://" in words[0]:
        endpoints.insert(0, words.pop(0))
    elif words and not (args.connect or args.bind):
        if words[0] == "serve":
            raise UsageError("'serve' must be the first word: zrpc serve [OPTIONS] MODULE[:OBJECT]")
        raise UsageError(f"{words[0]!r} is not an endpoint: expected tcp://HOST:PORT or ipc://PATH "
                         "(or give --connect/--bind ENDPOINT)")
    if words and "://" in words[0]:
        raise UsageError(f"{words[0]!r} looks like an endpoint where METHOD was expected "
                         "(use --connect for several endpoints)")
    method = words.pop(0) if words else None
    return links(endpoints, args.bind), method, words


def _invoke(client: Any, method: str, call_args: List[Any], call_kwargs: Dict[str, Any],
            args: argparse.Namespace, out: Output) -> int:
    import zrpc

    try:
        result = client.call(method, *call_args, **call_kwargs)
    except zrpc.KeywordArgumentsUnsupported:
        raise
    except TypeError as exc:  # msgpack cannot carry an argument (e.g. an integer over 64 bits)
        raise UsageError(str(exc)) from None
    if not isinstance(result, zrpc.Stream):
        out.result(result)
        return EXIT_OK
    with result:
        try:
            if args.array:
                out.array(result)
            else:
                for item in result:
                    out.item(item)
        except (KeyboardInterrupt, BrokenPipeError):
            result.close()  # tell the server to stop producing; closing the client flushes it
            raise
    return EXIT_OK


def _list_service(client: Any, out: Output) -> int:
    service, methods = describe_service(client)
    lines = [f"[{service}]"]
    width = min(max((len(m.title) for m in methods), default=0), 48)
    for m in methods:
        summary = m.summary
        lines.append(f"{m.title.ljust(width)}  {summary}".rstrip() if summary else m.title)
    if not methods:
        lines.append("(no methods)")
    out.text("\n".join(lines))
    return EXIT_OK


def _method_help(client: Any, method: str, out: Output) -> int:
    service, methods = describe_service(client, only=method)
    m = methods[0]
    lines = [f"[{service}] {m.name}{m.signature}"]
    if m.stream:
        lines.append("(a stream: one result per line as they arrive; --array for one JSON array)")
    lines.append("")
    lines.append(m.doc.strip() if m.doc else "(undocumented)")
    out.text("\n".join(lines))
    return EXIT_OK
