"""zrpc: ZeroMQ RPC for Python, wire-compatible with zerorpc protocol v3.

    server = zrpc.Server({"add": lambda a, b: a + b})
    server.bind("tcp://127.0.0.1:4242")
    server.run()

    client = zrpc.Client("tcp://127.0.0.1:4242")
    client.add(10, 20)  # -> 30

The package is layered (see the README's "Design" section):

* ``zrpc.core``: the protocol, channels, method tables and sessions. No I/O,
  no event loop; imports without gevent.
* ``zrpc.gevent``: the gevent driver (``Server``, ``Client``), re-exported
  here and imported lazily on first use, so ``import zrpc`` and
  ``import zrpc.core`` work where gevent is not installed.
"""
from __future__ import annotations

import logging
from typing import Any

from .core.errors import (
    AuthenticationFailed,
    ClosedError,
    KeywordArgumentsUnsupported,
    LostRemote,
    RemoteError,
    ServerBusy,
    ServerStopping,
    TimeoutExpired,
    TooManyServers,
    ZrpcError,
)
from .core.intercept import CallInfo, ClientCallInfo, current_call
from .core.methods import stream
from .core.protocol import ProtocolError

__version__ = "0.1.0"

__all__ = [
    "Server",
    "Client",
    "Workers",
    "Future",
    "Stream",
    "Batch",
    "Publisher",
    "Subscriber",
    "Pusher",
    "Puller",
    "stream",
    "ZrpcError",
    "RemoteError",
    "ServerBusy",
    "ServerStopping",
    "TooManyServers",
    "TimeoutExpired",
    "LostRemote",
    "KeywordArgumentsUnsupported",
    "ClosedError",
    "ProtocolError",
    "AuthenticationFailed",
    "curve_keypair",
    "current_call",
    "CallInfo",
    "ClientCallInfo",
    "__version__",
]

# A library leaves log output to the application; the CLI configures its own.
logging.getLogger("zrpc").addHandler(logging.NullHandler())

_GEVENT_NAMES = frozenset(("Server", "Client", "Future", "Stream", "Batch",
                           "Publisher", "Subscriber", "Pusher", "Puller"))
#: Security helpers need pyzmq (zmq.auth), so they load on first use too.
_SECURITY_NAMES = frozenset(("curve_keypair",))


def __getattr__(name: str) -> Any:
    """PEP 562: load the gevent driver only when one of its classes is first used."""
    if name == "Workers":  # the multi-process server: pyzmq only, no gevent
        from .workers import Workers

        globals()[name] = Workers
        return Workers
    if name in _SECURITY_NAMES:
        from . import security

        value = getattr(security, name)
        globals()[name] = value
        return value
    if name in _GEVENT_NAMES:
        from . import gevent as driver

        value = getattr(driver, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zrpc' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | _GEVENT_NAMES | _SECURITY_NAMES | {"Workers"})
