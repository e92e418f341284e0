"""The gevent driver: ``Server`` and ``Client`` (and one-way events) over ZeroMQ sockets on the gevent hub.

Everything here is I/O: a reader greenlet per socket, call greenlets,
timers and futures. What an event means is decided by the sessions of
``zrpc.core``; this package only moves frames and wakes greenlets.
"""
from .client import Batch, Client, Future, Stream
from .events import Publisher, Puller, Pusher, Subscriber
from .server import Server

__all__ = ["Server", "Client", "Future", "Stream", "Batch", "Publisher", "Subscriber", "Pusher", "Puller"]
