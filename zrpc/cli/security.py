"""The command line's security options: ``zrpc keygen``, CURVE and IP options of ``zrpc`` and ``zrpc serve``.

This module only parses and translates: options become the keyword arguments
of :class:`zrpc.Client` / :class:`zrpc.Server`, checked (keys loaded) before
anything connects, so a bad key file is a usage error, not a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict

from .parsing import Parser, UsageError
from .status import EXIT_AUTH

__all__ = ["Keygen", "add_client_options", "add_server_options", "client_kwargs", "server_kwargs", "auth_failed"]

#: Exit status when the server refused this client or the keys do not match.

KEYGEN_DESCRIPTION = """\
Write a new CURVE key pair: NAME.key (the public certificate, to give to the
other side) and NAME.key_secret (the secret one, mode 0600, to keep). Both are
zmq.auth certificates. The public key is printed on stdout.
"""

KEYGEN_EPILOG = """\
examples:
  zrpc keygen server          -> server.key, server.key_secret
  zrpc keygen keys/alice      -> keys/alice.key, keys/alice.key_secret
  zrpc serve --curve-secret server.key_secret --curve-clients clients/ --bind tcp://0.0.0.0:4242 mymodule
  zrpc --curve-server-key server.key --curve-secret alice.key_secret tcp://host:4242 add 1 2
"""


def _usage_error(message: str) -> Exception:
    return UsageError(message)


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--curve-server-key`` and ``--curve-secret`` for calling a CURVE server."""
    group = parser.add_argument_group("security (CURVE)")
    group.add_argument("--curve-server-key", metavar="FILE|Z85", default=None,
                       help="encrypt with CURVE; the server's public key (its .key file or Z85 text)")
    group.add_argument("--curve-secret", metavar="FILE", default=None,
                       help="this client's secret certificate (NAME.key_secret; default: a one-off key,"
                            " enough for servers that admit any client)")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--curve-secret``, ``--curve-clients``, ``--allow-ip`` and ``--deny-ip`` for ``zrpc serve``."""
    group = parser.add_argument_group("security")
    group.add_argument("--curve-secret", metavar="FILE", default=None,
                       help="encrypt every endpoint with CURVE, using this secret certificate (NAME.key_secret)")
    group.add_argument("--curve-clients", metavar="DIR", default=None,
                       help="admit only clients whose public certificate (*.key) is in DIR; re-read when it"
                            " changes (default: any client that knows the server's public key)")
    group.add_argument("--allow-ip", action="append", default=None, metavar="NET",
                       help="admit only clients from this address or network, e.g. 10.0.0.0/8 (repeatable)")
    group.add_argument("--deny-ip", action="append", default=None, metavar="NET",
                       help="refuse clients from this address or network (repeatable; wins over --allow-ip)")


def client_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The Client keyword arguments for these options (keys loaded now); raises UsageError."""
    from .. import security

    if args.curve_server_key is None:
        if args.curve_secret is not None:
            raise _usage_error("--curve-secret needs --curve-server-key (the server's public key)")
        return {}
    try:
        server_key = security.load_public_key(args.curve_server_key, "--curve-server-key")
        secret = (None if args.curve_secret is None
                  else security.load_secret_key(args.curve_secret, "--curve-secret")[1])
    except ValueError as exc:
        raise _usage_error(str(exc)) from None
    return {"curve_server_key": server_key, "curve_secret_key": secret}


def server_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The Server keyword arguments for these options (keys and networks checked now); raises UsageError."""
    from .. import security

    kwargs: Dict[str, Any] = {}
    try:
        if args.curve_secret is not None:
            kwargs["curve_secret_key"] = security.load_secret_key(args.curve_secret, "--curve-secret")[1]
        if args.curve_clients is not None:
            if args.curve_secret is None:
                raise ValueError("--curve-clients needs --curve-secret (the server's secret certificate)")
            if not os.path.isdir(args.curve_clients):
                raise ValueError(f"--curve-clients: {args.curve_clients!r} is not a directory")
            kwargs["curve_clients"] = args.curve_clients
        if args.allow_ip is not None or args.deny_ip is not None:
            security.IPRules(args.allow_ip, args.deny_ip)  # reject a bad network before serving
            kwargs["allow_ips"] = args.allow_ip
            kwargs["deny_ips"] = args.deny_ip
    except ValueError as exc:
        raise _usage_error(str(exc).replace("allow_ips", "--allow-ip").replace("deny_ips", "--deny-ip")) from None
    return kwargs


def auth_failed(exc: BaseException) -> int:
    """Report an AuthenticationFailed in one line; return its exit status."""
    print(f"zrpc: authentication failed: {exc} (check --curve-server-key, and that the server admits"
          " this client's key and address)", file=sys.stderr, flush=True)
    return EXIT_AUTH


class Keygen:
    """The ``zrpc keygen`` subcommand."""

    @staticmethod
    def build_parser() -> argparse.ArgumentParser:
        parser = Parser(prog="zrpc keygen", usage="zrpc keygen [--force] NAME", description=KEYGEN_DESCRIPTION,
                        epilog=KEYGEN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("name", metavar="NAME", help="path and base name of the two files")
        parser.add_argument("--force", action="store_true", help="replace existing files")
        return parser

    @staticmethod
    def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
        return keygen(args)


def keygen(args: argparse.Namespace) -> int:
    """``zrpc keygen [--force] NAME``: write NAME.key and NAME.key_secret; print the public key."""
    from .. import security

    directory = os.path.dirname(os.path.abspath(args.name))
    if not os.path.isdir(directory):
        raise _usage_error(f"no such directory: {directory}")
    try:
        public_file, secret_file = security.write_certificates(args.name, overwrite=args.force)
    except FileExistsError as exc:
        raise _usage_error(f"{exc} (or use --force)") from None
    public = security.load_public_key(public_file)
    print(public.decode())
    print(f"zrpc: wrote {public_file} (public) and {secret_file} (secret, mode 0600)", file=sys.stderr)
    return 0
