"""The options that say how a CLI client or server reaches its peer, and the nodes built from them.

Both ``zrpc`` (a Client) and ``zrpc serve`` (a Server) take the "connection"
option group, and both get their node from :func:`new_client` /
:func:`new_server`, so every connection option is added and applied here and
nowhere else. A bad endpoint is a :class:`UsageError`.

Security options (``--curve-server-key``, ``--curve-secret``; for serve
``--curve-secret``, ``--curve-clients``, ``--allow-ip``, ``--deny-ip``) belong
here: add them in :func:`add_connection_options` (``role`` tells the client's
from the server's) and turn them into constructor arguments in
:func:`_node_options` (socket options) or into socket setups on the node
before :func:`link`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Tuple

from .parsing import UsageError, seconds
from .tracing import print_event

__all__ = ["CLIENT", "SERVER", "add_connection_options", "new_client", "new_server", "links", "link"]

CLIENT, SERVER = "client", "server"

#: ("connect" | "bind", endpoint) pairs, in the order given.
Links = List[Tuple[str, str]]


def add_connection_options(parser: argparse.ArgumentParser, role: str) -> argparse._ArgumentGroup:
    """The "connection" group: --connect, --bind, --heartbeat (and, later, security) for ``role``."""
    group = parser.add_argument_group("connection")
    group.add_argument("-c", "--connect", action="append", default=[], metavar="ENDPOINT",
                       help="connect to ENDPOINT (repeatable)")
    group.add_argument("-b", "--bind", action="append", default=[], metavar="ENDPOINT",
                       help="bind ENDPOINT and let the peer connect (repeatable)")
    group.add_argument("--heartbeat", type=seconds, default=5.0, metavar="SECONDS",
                       help="heartbeat interval, should match the peer's; 0 disables (default: 5)")
    from . import security

    (security.add_client_options if role == CLIENT else security.add_server_options)(parser)
    return group


def _node_options(args: argparse.Namespace, role: str) -> Dict[str, Any]:
    """Constructor arguments common to the Client and the Server, from the parsed options."""
    from . import security

    return {
        "heartbeat": args.heartbeat or None,
        "trace": print_event if args.debug else None,
        **(security.client_kwargs(args) if role == CLIENT else security.server_kwargs(args)),
    }


def new_client(args: argparse.Namespace, **options: Any) -> Any:
    """A :class:`zrpc.Client` set up as the options say, linked to nothing yet."""
    import zrpc

    return zrpc.Client(None, **_node_options(args, CLIENT), **options)


def new_server(methods: Any, args: argparse.Namespace, **options: Any) -> Any:
    """A :class:`zrpc.Server` of ``methods`` set up as the options say, linked to nothing yet."""
    import zrpc

    return zrpc.Server(methods, **_node_options(args, SERVER), **options)


def links(connect: List[str], bind: List[str]) -> Links:
    """--connect and --bind endpoints as links: the connects first."""
    return [("connect", ep) for ep in connect] + [("bind", ep) for ep in bind]


def link(node: Any, links: Links, announce_binds: bool = False) -> None:
    """Connect or bind ``node`` as ``links`` say; a bad endpoint is a UsageError."""
    import zmq

    for verb, endpoint in links:
        bind = verb == "bind"
        try:
            if bind:
                bound = node.bind(endpoint)
                if announce_binds:
                    print(f"zrpc: bound {bound}, waiting for the server to connect", file=sys.stderr)
            else:
                node.connect(endpoint)
        except zmq.ZMQError as exc:
            raise UsageError(_endpoint_problem(endpoint, exc, bind)) from None


def _endpoint_problem(endpoint: str, exc: Exception, bind: bool) -> str:
    import zmq

    errno = getattr(exc, "errno", None)
    reason = zmq.strerror(errno) if errno else str(exc)
    hint = ""
    if "://" not in endpoint:
        hint = " (expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)"
    elif endpoint.startswith("tcp://") and not endpoint.rsplit(":", 1)[-1].replace("*", "").isdigit():
        hint = " (a tcp endpoint needs a port: tcp://HOST:PORT)"
    elif "Protocol not supported" in reason:
        hint = " (supported transports: tcp://, ipc://, inproc://)"
    verb = "bind" if bind else "connect to"
    return f"cannot {verb} {endpoint!r}: {reason}{hint}"
