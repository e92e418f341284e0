"""The asyncio side of security: the ZAP socket read by a loop callback.

Decisions belong to ``zrpc.security`` (the policy and the guards); this
module only reads the ZAP socket on asyncio. One :class:`ZapDriver` per zmq
context serves every zrpc server of that context, each under a ZAP domain of
its own.
"""
from __future__ import annotations

import asyncio
from typing import Dict

import zmq

from ..security import ZapHandler

__all__ = ["ZapDriver"]

_POLLIN = int(zmq.POLLIN)


class ZapDriver(ZapHandler):
    """Serves ZAP for every zrpc server of one zmq context, from the running loop's reader callback."""

    _handlers: Dict[int, ZapHandler] = {}

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(context)
        self._loop = asyncio.get_running_loop()
        self._fd = self._sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._readable)
        self._loop.call_soon(self._readable)  # requests queued before the reader was registered

    def _readable(self) -> None:
        # ZMQ_FD is edge-triggered and each reply may consume the edge: look again until dry.
        try:
            while self.answer_pending() and self._sock.getsockopt(zmq.EVENTS) & _POLLIN:
                pass
        except zmq.ZMQError:
            pass

    def _stop(self) -> None:
        self._loop.remove_reader(self._fd)
