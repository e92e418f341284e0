"""The asyncio driver: ``Client`` and ``Server`` over ZeroMQ sockets on an asyncio loop (or uvloop).

    async with zrpc.aio.Client("tcp://127.0.0.1:4242", timeout=5) as client:
        print(await client.add(1, 2))
        async for item in client.count(5):  # a stream
            print(item)

Everything here is I/O: a reader callback per socket, a task per call,
loop timers and futures. What an event means is decided by the sessions of
``zrpc.core``, shared with the gevent driver (``zrpc.gevent``). This
package never imports gevent: it works where gevent is not installed.
"""
from ..core.errors import (
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
from ..core.methods import stream
from .client import Batch, Call, Client, Stream
from .server import Server, current_call

__all__ = [
    "Client",
    "Server",
    "Stream",
    "Batch",
    "Call",
    "stream",
    "current_call",
    "ZrpcError",
    "RemoteError",
    "ServerBusy",
    "ServerStopping",
    "TooManyServers",
    "TimeoutExpired",
    "LostRemote",
    "KeywordArgumentsUnsupported",
    "ClosedError",
]
