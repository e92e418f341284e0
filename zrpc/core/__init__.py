"""The zrpc core: zerorpc protocol v3 without I/O.

This package contains no networking code and no event loop: it imports
neither zmq sockets nor gevent nor asyncio. It owns what every driver
shares: the wire format and its validation (``protocol``), the state of
each call's channel with heartbeats and stream credit (``channel``), the
method table a server exposes (``methods``), which server a client's
next call goes to (``balancing``) and the errors a user can meet
(``errors``). A driver (``zrpc.gevent``, and later ``zrpc.aio``)
feeds it frames and the clock, and performs the I/O it asks for.
"""
from . import balancing, channel, errors, methods, protocol

__all__ = ["balancing", "channel", "errors", "methods", "protocol"]
