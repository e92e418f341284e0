"""The hand-written baseline: about the least code that does RPC over ZeroMQ on gevent.

No framework: a ``zmq.green`` ROUTER server that spawns one greenlet per
request, and a ``zmq.green`` DEALER client with one reader greenlet that
hands each reply to the waiting caller by message id. Frames are zerorpc v3
events (msgpack ``[header, name, args]`` after an empty delimiter frame), so
a zrpc or zerorpc client can call this server too. There are no heartbeats,
no flow control, no streams, no cancellation and no send timeouts: it is
the floor that a framework's overhead is measured against.
"""
from __future__ import annotations

import os
import time
from itertools import count
from typing import Any, Callable, Dict, Optional

import gevent
import msgpack
import zmq.green as zmq
from gevent.event import AsyncResult
from gevent.lock import Semaphore

__all__ = ["BaselineServer", "BaselineClient", "BaselineRemoteError"]

#: How long a reply may wait for a full peer queue before it is dropped.
_SEND_PATIENCE = 60.0
_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def _unpackb(payload: Any) -> Any:
    return msgpack.unpackb(payload, raw=False)


def _ids():
    base = os.urandom(12).hex().encode()
    for n in count():
        yield b"%08x%s" % (n & 0xFFFFFFFF, base)


class BaselineRemoteError(Exception):
    pass


class BaselineServer:
    """ROUTER socket; each request runs in its own greenlet and replies OK or ERR."""

    def __init__(self, methods: Dict[str, Callable[..., Any]], context: Optional[zmq.Context] = None):
        self.methods = methods
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        # Without this a ROUTER silently drops replies to a peer whose queue is full
        # (a client busy sending 10,000 requests); with it, send raises Again and we wait.
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._ids = _ids()

    def bind(self, endpoint: str) -> str:
        self.sock.bind(endpoint)
        return self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def run(self) -> None:
        recv = self.sock.recv_multipart
        spawn = gevent.spawn
        handle = self._handle
        while True:
            spawn(handle, recv())

    def _handle(self, frames: list) -> None:
        header, name, args = _unpackb(frames[-1])
        try:
            result = self.methods[name](*args)
            reply_name, reply_args = "OK", [result]
        except Exception as exc:
            reply_name, reply_args = "ERR", [type(exc).__name__, str(exc), ""]
        reply = {"message_id": next(self._ids), "v": 3, "response_to": header["message_id"]}
        frames[-1] = _packb((reply, reply_name, reply_args))
        # ROUTER's POLLOUT says "some peer has room", not which: poll with a backoff (bounded).
        backoff, deadline = 0.0005, time.monotonic() + _SEND_PATIENCE
        while True:
            try:
                self.sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                if time.monotonic() > deadline:
                    return  # the caller times out
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 0.05)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    return  # the caller is gone
                raise

    def close(self) -> None:
        self.sock.close(linger=0)


class BaselineClient:
    """DEALER socket shared by any number of greenlets; one reader greenlet routes replies."""

    def __init__(self, endpoint: str, timeout: Optional[float] = 30.0,
                 context: Optional[zmq.Context] = None):
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self._ids = _ids()
        self._pending: Dict[bytes, AsyncResult] = {}
        # zmq.green lets one greenlet at a time wait for a full socket to drain.
        self._send_lock = Semaphore()
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        recv = self.sock.recv_multipart
        pending = self._pending
        while True:
            frames = recv()
            header, name, args = _unpackb(frames[-1])
            future = pending.pop(header.get("response_to"), None)
            if future is None:
                continue  # late reply after a timeout
            if name == "OK":
                future.set(args[0])
            else:
                future.set_exception(BaselineRemoteError(*args))

    def call_async(self, name: str, *args: Any) -> AsyncResult:
        return self._start(name, args)[1]

    def _start(self, name: str, args: tuple):
        message_id = next(self._ids)
        future = AsyncResult()
        self._pending[message_id] = future
        frames = [b"", _packb(({"message_id": message_id, "v": 3}, name, args))]
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            with self._send_lock:
                self.sock.send_multipart(frames)
        return message_id, future

    def call(self, name: str, *args: Any) -> Any:
        message_id, future = self._start(name, args)
        try:
            return future.get(timeout=self.timeout)
        except gevent.Timeout:
            self._pending.pop(message_id, None)
            raise

    def close(self) -> None:
        self._reader.kill(block=False)
        self.sock.close(linger=0)
