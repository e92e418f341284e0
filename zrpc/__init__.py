"""zrpc: ZeroMQ RPC for Python on gevent, wire-compatible with zerorpc protocol v3.

    server = zrpc.Server({"add": lambda a, b: a + b})
    server.bind("tcp://127.0.0.1:4242")
    server.run()

    client = zrpc.Client("tcp://127.0.0.1:4242")
    client.add(10, 20)  # -> 30
"""
from .client import Batch, Client, Future, Stream
from .errors import (
    ClosedError,
    KeywordArgumentsUnsupported,
    LostRemote,
    RemoteError,
    TimeoutExpired,
    ZrpcError,
)
from .methods import stream
from .protocol import ProtocolError
from .server import Server

__version__ = "0.1.0"

__all__ = [
    "Server",
    "Client",
    "Future",
    "Stream",
    "Batch",
    "stream",
    "ZrpcError",
    "RemoteError",
    "TimeoutExpired",
    "LostRemote",
    "KeywordArgumentsUnsupported",
    "ClosedError",
    "ProtocolError",
    "__version__",
]
