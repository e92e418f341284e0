"""The exceptions a zrpc user can meet. Every message says what happened and what to do."""
from __future__ import annotations

from typing import Optional

__all__ = [
    "ZrpcError",
    "RemoteError",
    "ServerBusy",
    "ServerStopping",
    "TooManyServers",
    "TimeoutExpired",
    "LostRemote",
    "KeywordArgumentsUnsupported",
    "ClosedError",
    "AuthenticationFailed",
]


class ZrpcError(Exception):
    """Base class of every error raised by zrpc itself."""


class RemoteError(ZrpcError):
    """The remote method raised; ``name``, ``msg`` and ``traceback`` describe the remote exception."""

    def __init__(self, name: str, msg: str, traceback: Optional[str] = None) -> None:
        super().__init__(name, msg, traceback)
        self.name = name
        self.msg = msg
        self.traceback = traceback

    def __str__(self) -> str:
        return f"{self.name}: {self.msg}" if self.msg else self.name


class ServerBusy(RemoteError):
    """The server refused the call at once: its queue of waiting calls is full (``max_pending``). Retry later or elsewhere."""


class ServerStopping(RemoteError):
    """The server refused the call before running it: it is shutting down.

    A client with other servers has already tried them (it retries such a
    call at once on a server that can take it); this reaches the caller
    only when none could.
    """


class TimeoutExpired(ZrpcError, TimeoutError):
    """The call did not complete (sending included) within its timeout."""

    def __init__(self, timeout: Optional[float], what: str = "") -> None:
        self.timeout = timeout
        where = f" {what}" if what else ""
        super().__init__(f"timeout expired after {timeout:g}s{where}" if timeout is not None
                         else f"timeout expired{where}")


class LostRemote(ZrpcError, ConnectionError):
    """The peer went silent for two heartbeat intervals (dead process, host or network)."""


class KeywordArgumentsUnsupported(ZrpcError, TypeError):
    """The server cannot take keyword arguments (it is a plain zerorpc server): pass them positionally."""


class TooManyServers(ZrpcError, ConnectionError):
    """Several servers connected to one endpoint this client bound: it cannot tell them apart.

    A bound client's socket hands each message to the next peer in turn, so
    a second server would receive heartbeats, stream credit and cancels of
    the first one's calls. Bind one endpoint per server, or let the client
    connect to the servers.
    """


class ClosedError(ZrpcError):
    """The client or server was closed while the operation was waiting."""


class AuthenticationFailed(ZrpcError, PermissionError):
    """The security handshake failed: the server refused this client (key or address), or the keys do not match.

    Check the server's public key (curve_server_key), that this client's
    public key is among the server's curve_clients, and its IP rules.
    """
