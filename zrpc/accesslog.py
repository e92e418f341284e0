"""An access log: one line per call served, as a server interceptor (``zrpc serve --access-log``).

    server = zrpc.Server(service, interceptors=[zrpc.accesslog.AccessLog()])

Each line, at INFO on the ``zrpc.access`` logger::

    peer=127.0.0.1 user=- method=add outcome=ok duration=0.000213 in=52 out=31

``in``/``out`` are the bytes of the request and of every reply (all items of
a stream); a failed call adds ``error=NAME``. Every string that came from
the remote (method name, key) is escaped, so a hostile caller cannot forge
log lines. No dependency beyond the standard library.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from .core.protocol import printable

__all__ = ["AccessLog"]


class AccessLog:
    """A server interceptor logging one line per call, once it is over."""

    def __init__(self, logger: Optional[logging.Logger] = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("zrpc.access")
        self.level = level

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        if self.logger.isEnabledFor(self.level):
            call.add_done_callback(self._log)
        return proceed()

    def _log(self, call: Any) -> None:
        error = "" if call.error is None else f" error={printable(type(call.error).__name__)}"
        self.logger.log(self.level, "peer=%s user=%s method=%s outcome=%s duration=%.6f in=%d out=%d%s",
                        printable(call.peer_address or "-"), printable(call.user_id or "-"), printable(call.method),
                        call.outcome, call.duration, call.request_bytes, call.reply_bytes, error)
