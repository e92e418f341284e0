"""Interceptors, the call context and request headers, for both sides and every driver.

An interceptor wraps a call: ``interceptor(call, proceed) -> result``. The
first of a list is the outermost; ``proceed()`` runs the next one and
finally the call itself (the method on a server, sending the request on a
client). :func:`run_chain` is the one place the chain is run; the drivers
only decide what the innermost step is and how its result is waited for.

``call`` is a :class:`CallInfo` on a server (what ``zrpc.current_call()``
returns inside the method) and a :class:`ClientCallInfo` on a client. Both
take ``add_done_callback(fn)``: ``fn(call)`` runs once, when the outcome is
known; exceptions in it are logged, never raised.

Headers are the user's key/values sent with a request: plain extra keys of
the zerorpc header (so zerorpc's middleware context keys interoperate),
never the protocol's own (``message_id``, ``v``, ``response_to``) nor
zrpc's (``zrpc_*``, e.g. ``zrpc_timeout``: the seconds the caller still
waits). This module does no I/O and reads no clock except ``time.monotonic``
for deadlines and durations.
"""
from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from . import protocol
from .errors import ClosedError, LostRemote, TimeoutExpired

__all__ = [
    "Interceptor",
    "CallInfo",
    "ClientCallInfo",
    "run_chain",
    "current_call",
    "validate_headers",
    "user_headers",
    "request_timeout",
    "serving",
    "TIMEOUT_KEY",
    "MAX_HEADERS_SIZE",
    "client_outcome",
]

log = logging.getLogger("zrpc.intercept")

#: ``interceptor(call, proceed) -> result``.
Interceptor = Callable[[Any, Callable[[], Any]], Any]

#: Request header key: float seconds the caller still waits (relative: clocks need not agree).
TIMEOUT_KEY = "zrpc_timeout"
#: Bytes the user headers of one request may take, msgpack-encoded.
MAX_HEADERS_SIZE = 8192
_PROTOCOL_KEYS = frozenset(("message_id", "v", "response_to"))
_SCALARS = (str, bytes, int, float, bool, type(None))

#: The server call this task or greenlet serves (each greenlet has its own context).
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("zrpc_current_call")


def current_call() -> "CallInfo":
    """The call served by this greenlet or task: method, peer, headers, deadline.

    Works inside a remote method and its server interceptors: in the
    method's own greenlet on gevent (not in greenlets it spawns: gevent
    does not hand contextvars on), in the method's task on asyncio and in
    what inherits its context (tasks it creates, its worker thread).
    Raises LookupError elsewhere.
    """
    call = _CURRENT.get(None)
    if call is None:
        raise LookupError("current_call() works only inside a remote method (its own greenlet or task)")
    return call.info if call.info is not None else call.make_info()


def serving() -> Any:
    """The server call (a ServerCall) this greenlet or task serves while it runs, or None.

    A task that a method created and that outlives the call sees None: its
    calls do not inherit a deadline that no longer means anything.
    """
    call = _CURRENT.get(None)
    return call if call is not None and call.running else None


def run_chain(interceptors: Sequence[Interceptor], call: Any, final: Callable[[], Any]) -> Any:
    """Run ``interceptors`` around ``final()``: the first is outermost; returns what the first returns."""
    count = len(interceptors)
    if count == 1:  # the usual case, without the closures
        return interceptors[0](call, final)

    def step(index: int) -> Any:
        if index == count:
            return final()
        return interceptors[index](call, lambda: step(index + 1))

    return step(0)


def validate_headers(headers: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """A copy of ``headers`` fit to send (None if empty); ValueError/TypeError saying what is wrong.

    Keys are str, never the protocol's (message_id, v, response_to) nor
    zrpc's (``zrpc_*``); values are msgpack scalars (str, bytes, int, float,
    bool, None); all of them take at most MAX_HEADERS_SIZE bytes encoded.
    """
    if not headers:
        return None
    checked: Dict[str, Any] = {}
    for key, value in headers.items():
        if type(key) is not str:
            raise TypeError(f"header keys must be str, not {type(key).__name__} ({key!r})")
        if key in _PROTOCOL_KEYS or key.startswith("zrpc_"):
            raise ValueError(f"header key {key!r} is reserved (protocol keys and zrpc_* cannot be set)")
        if not isinstance(value, _SCALARS):
            raise TypeError(f"header {key!r}: values must be str, bytes, int, float, bool or None, "
                            f"not {type(value).__name__}")
        checked[key] = value
    try:
        size = len(protocol.encode(checked, "", None))
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"headers cannot be encoded: {exc}") from None
    if size > MAX_HEADERS_SIZE:
        raise ValueError(f"headers take {size} bytes, over the limit of {MAX_HEADERS_SIZE}")
    return checked


def user_headers(header: Mapping[str, Any]) -> Dict[str, Any]:
    """The user metadata of a received request header: every key but the protocol's and ``zrpc_*``."""
    return {k: v for k, v in header.items()
            if k not in _PROTOCOL_KEYS and not (type(k) is str and k.startswith("zrpc_"))}


def request_timeout(header: Mapping[str, Any]) -> Optional[float]:
    """The caller's timeout (seconds, at least 0) carried by a request header; None if absent or not a number."""
    value = header.get(TIMEOUT_KEY)
    if value is None or type(value) not in (int, float) or value != value:
        return None
    return max(0.0, float(value))


class _Outcome:
    """What both sides' call objects share: done callbacks and the outcome they see."""

    __slots__ = ("outcome", "error", "result", "duration", "_callbacks", "_started")

    def __init__(self, started: float) -> None:
        self.outcome: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.result: Any = None
        self.duration: Optional[float] = None
        self._callbacks: Optional[List[Callable[[Any], None]]] = None
        self._started = started

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(call)`` once the call is over (at once if it already is)."""
        if self.outcome is not None:
            self._run(fn)
        elif self._callbacks is None:
            self._callbacks = [fn]
        else:
            self._callbacks.append(fn)

    def _finish(self, outcome: str, error: Optional[BaseException] = None, result: Any = None) -> None:
        """Record the outcome and run the done callbacks (once; later calls are ignored)."""
        if self.outcome is not None:
            return
        self.duration = time.monotonic() - self._started
        self.outcome = outcome
        self.error = error
        self.result = result
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    log.exception("a done callback of a call to %s() raised",
                                  protocol.printable(getattr(self, "method", "")))

    def _run(self, fn: Callable[[Any], None]) -> None:
        try:
            fn(self)
        except Exception:
            log.exception("a done callback of a call to %s() raised", protocol.printable(getattr(self, "method", "")))


class CallInfo(_Outcome):
    """A call being served, as its interceptors and ``zrpc.current_call()`` see it.

    ``method``; ``args``/``kwargs`` (an interceptor may replace them before
    ``proceed()``); ``header`` (the whole request header, read-only) and
    ``headers`` (its user keys); ``peer_address`` (IP, None over ipc);
    ``user_id`` (CURVE public key, Z85); ``message_id``; ``deadline``
    (``time.monotonic()`` based, None if the caller sent no timeout) and
    :meth:`remaining`. Once over: ``outcome`` ("ok", "error", "cancelled"),
    ``error``, ``result``, ``duration``, ``stream``, ``request_bytes``,
    ``reply_bytes``.
    """

    __slots__ = ("method", "args", "kwargs", "header", "_headers", "_connection", "_peer", "message_id",
                 "deadline", "stream", "request_bytes", "reply_bytes")

    def __init__(self, method: str, header: Mapping[str, Any], connection: Any, deadline: Optional[float],
                 started: float, request_bytes: int = 0) -> None:
        super().__init__(started)
        self.method = method
        self.args: tuple = ()
        self.kwargs: Dict[str, Any] = {}
        self.header = header
        self._headers: Optional[Dict[str, Any]] = None
        self._connection = connection  # the zmq Frame the request came in: its metadata, read when asked
        self._peer: Optional[tuple] = None
        self.message_id = header.get("message_id")
        self.deadline = deadline
        self.stream = False
        self.request_bytes = request_bytes
        self.reply_bytes = 0

    @property
    def headers(self) -> Mapping[str, Any]:
        """The request's user headers (every key but the protocol's and ``zrpc_*``)."""
        if self._headers is None:
            self._headers = user_headers(self.header)
        return self._headers

    @property
    def peer_address(self) -> Optional[str]:
        """The caller's IP address (None over ipc or inproc)."""
        return self._peer_info()[0]

    @property
    def user_id(self) -> Optional[str]:
        """Under CURVE, the caller's public key (Z85 text) as the server admitted it; else None."""
        return self._peer_info()[1]

    def _peer_info(self) -> tuple:
        peer = self._peer
        if peer is None:
            frame = self._connection
            peer = self._peer = (frame_property(frame, "Peer-Address"), frame_property(frame, "User-Id"))
            self._connection = None
        return peer

    def remaining(self) -> Optional[float]:
        """Seconds until the deadline (negative once passed), or None without a deadline."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def __repr__(self) -> str:
        return (f"<CallInfo {protocol.printable(self.method)}() from {self.peer_address or '?'}"
                f"{'' if self.outcome is None else ': ' + self.outcome}>")


def frame_property(frame: Any, name: str) -> Optional[str]:
    """A property of the zmq Frame a request came in (None if unknown)."""
    if frame is None:
        return None
    try:
        value = frame.get(name)
    except Exception:  # zmq.ZMQError: no such property (or not a Frame)
        return None
    return value or None


class ClientCallInfo(_Outcome):
    """A call being made, as client interceptors see it.

    ``method``, ``args``, ``kwargs``, ``headers`` (a dict: add keys before
    ``proceed()``), ``timeout``, ``async_`` (True for call_async and
    batches). Once over: ``outcome`` ("ok", "error", "timeout", "lost",
    "cancelled", "closed"), ``error``, ``result``, ``duration``.
    """

    __slots__ = ("method", "args", "kwargs", "headers", "timeout", "async_", "_message_id", "_wire_headers")

    def __init__(self, method: str, args: tuple, kwargs: Dict[str, Any], headers: Optional[Mapping[str, Any]],
                 timeout: Optional[float], async_: bool) -> None:
        super().__init__(time.monotonic())
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.headers: Dict[str, Any] = dict(headers or ())
        self.timeout = timeout
        self.async_ = async_
        #: For zrpc.compat's hooks: the message id the request must carry, and header keys that
        #: were checked by their maker (any msgpack value, as zerorpc's task context), or None.
        self._message_id: Optional[bytes] = None
        self._wire_headers: Optional[Dict[str, Any]] = None

    def _settle(self, error: Optional[BaseException], result: Any = None) -> None:
        """Finish with the outcome ``error`` stands for (None: "ok")."""
        self._finish(client_outcome(error), error, result)

    def __repr__(self) -> str:
        return f"<ClientCallInfo {protocol.printable(self.method)}(){'' if self.outcome is None else ': ' + self.outcome}>"


def client_outcome(error: Optional[BaseException]) -> str:
    """The outcome a client call's error stands for: ok, timeout, lost, closed, cancelled or error."""
    if error is None:
        return "ok"
    if isinstance(error, TimeoutExpired):
        return "timeout"
    if isinstance(error, LostRemote):
        return "lost"
    if isinstance(error, ClosedError):
        return "closed"
    if type(error).__name__ == "CancelledError":  # asyncio's, without importing asyncio here
        return "cancelled"
    return "error"
