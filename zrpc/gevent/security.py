"""The gevent side of security: the greenlet that serves ZAP.

Decisions belong to ``zrpc.security`` (the policy, the guards Server and
Client hold, the handshake watch); this module only reads the ZAP socket
on gevent. One :class:`ZapDriver` per zmq context serves every zrpc server
of that context, each under a ZAP domain of its own.
"""
from __future__ import annotations

import socket as _socket
from typing import Dict

import gevent
import zmq
from gevent.socket import wait_read

from ..security import ZapHandler

__all__ = ["ZapDriver"]

_POLLIN = int(zmq.POLLIN)
# The loop re-checks ZMQ_EVENTS at least this often, so a missed FD edge costs a delay, never a hang.
_POLL_BACKSTOP = 1.0


class ZapDriver(ZapHandler):
    """Serves ZAP for every zrpc server of one zmq context, in a greenlet."""

    _handlers: Dict[int, ZapHandler] = {}

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(context)
        self._greenlet = gevent.spawn(self._serve)

    def _pause(self) -> None:
        gevent.sleep(0.005)

    def _serve(self) -> None:
        fd = self._sock.getsockopt(zmq.FD)
        while self.answer_pending():
            try:
                if not self._sock.getsockopt(zmq.EVENTS) & _POLLIN:
                    wait_read(fd, _POLL_BACKSTOP)
            except _socket.timeout:
                pass
            except zmq.ZMQError:
                return

    def _stop(self) -> None:
        if self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)
