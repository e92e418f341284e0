"""The client's half of zerorpc v3 without I/O: building requests and routing what comes back.

Theory of operation
-------------------
:meth:`ClientSession.request` encodes a call; the driver hands it to one
of its sockets, trying them in :meth:`ClientSession.send_order` (round
robin over the servers that are up), and reports where it went with
:meth:`sent`. From then on the call is a channel in the table, and every
later event of it (heartbeats, credit, cancel) travels on that socket, so
it reaches the server that took the call.

:meth:`receive` routes an incoming payload to its call and says what
happened, as ``(kind, call, value)``:

=======  =================================================================
kind     value
=======  =================================================================
RESULT   the method's result; the call is over
ERROR    the exception the caller gets (RemoteError, ProtocolError...)
ITEM     the next item of a stream (its credit already counted)
END      the stream is complete
=======  =================================================================

Timeouts (:meth:`expire`), giving up on a stream (:meth:`abandon`), credit
(:meth:`grant`) and heartbeat loss (:meth:`lost`) are decided here too; the
driver owns only futures, timers and the buffers its readers wait on.
This module never touches a socket, a greenlet or a clock of its own.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import protocol
from .channel import Channel, StreamWindow
from .protocol import printable
from .errors import (
    AuthenticationFailed,
    KeywordArgumentsUnsupported,
    LostRemote,
    RemoteError,
    ServerBusy,
    TimeoutExpired,
)
from .intercept import TIMEOUT_KEY, serving
from .session import Session, Tracer

__all__ = ["ClientSession", "ClientCall", "RESULT", "ERROR", "ITEM", "END"]

log = logging.getLogger("zrpc.client")

RESULT, ERROR, ITEM, END = "result", "error", "item", "end"


class ClientCall(Channel):
    """One call in flight. ``transport`` is the socket it went out on.

    ``future``, ``timer`` and ``stream`` belong to the driver (what the
    caller waits on, the timeout timer, the stream buffer).
    """

    __slots__ = ("method", "kwnames", "timeout", "transport", "window", "future", "timer", "stream")

    def __init__(self, message_id: bytes, method: str, kwnames: Optional[Sequence[str]],
                 timeout: Optional[float], now: float) -> None:
        super().__init__(message_id, message_id, None, now)
        self.method = method
        self.kwnames = kwnames
        self.timeout = timeout
        self.transport: Any = None
        self.window: Optional[StreamWindow] = None
        self.future: Any = None
        self.timer: Any = None
        self.stream: Any = None


class ClientSession(Session):
    """The protocol state of one client: calls in flight and the round robin over its sockets."""

    def __init__(self, *, heartbeat: Optional[float], stream_window: int, max_message_size: Optional[int],
                 trace: Optional[Tracer] = None, inherit_deadline: bool = True) -> None:
        super().__init__(heartbeat, max_message_size, trace)
        #: Calls made while serving a call get at most what remains of its deadline.
        self.inherit_deadline = inherit_deadline
        StreamWindow(stream_window)  # validate now, not at the first stream
        self.stream_window = stream_window
        #: Where calls go, for error messages; the driver keeps it current.
        self.endpoints: List[str] = []
        self._next_socket = 0

    # -- starting a call -------------------------------------------------------
    def request(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any], timeout: Optional[float],
                now: float, headers: Optional[Dict[str, Any]] = None) -> Tuple[ClientCall, bytes]:
        """A new call and its encoded request (not in flight until :meth:`sent`).

        ``headers`` (already validated) go into the request header, with the
        timeout (``zrpc_timeout``). Made while serving a call, the call's
        timeout is at most what remains of that call's deadline (see
        ``inherit_deadline``); ``call.timeout`` is the one that applies.
        Raises TypeError if msgpack cannot encode the arguments.
        """
        message_id = next(self._ids)
        if kwargs:
            name, wire_args, kwnames = protocol.KWCALL, [method, args, kwargs], tuple(kwargs)
        else:
            name, wire_args, kwnames = method, args, None
        if self.inherit_deadline:
            outer = serving()
            if outer is not None and outer.deadline is not None:
                remaining = max(0.0, outer.deadline - now)
                if timeout is None or remaining < timeout:
                    timeout = remaining
        header = protocol.new_header(message_id)
        if timeout is not None:
            header[TIMEOUT_KEY] = timeout
        if headers:
            header.update(headers)
        try:
            payload = protocol.encode(header, name, wire_args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send the arguments of {method}(): {exc}") from None
        limit = self.max_message_size
        if limit is not None and len(payload) > limit:
            raise protocol.ProtocolError(
                f"the request to {method}() is {len(payload)} bytes, over max_message_size "
                f"({limit} bytes): nothing was sent (servers refuse such messages too)")
        if self.trace is not None:
            self.trace("send", header, name, wire_args)
        return ClientCall(message_id, method, kwnames, timeout, now), payload

    def send_order(self, count: int) -> List[int]:
        """The order in which to offer a new request to ``count`` sockets (round robin)."""
        first = self._next_socket
        return [(first + offset) % count for offset in range(count)]

    def sent(self, call: ClientCall, transport: Any, index: int, count: int, now: float) -> None:
        """The request of ``call`` went out on socket ``index`` of ``count``: the call is in flight."""
        self._next_socket = (index + 1) % count
        call.transport = transport
        # The heartbeat schedule starts when the request actually went out.
        call.last_sent = call.last_recv = call.last_ping = now
        self.table.add(call)

    def calling(self, method: str) -> str:
        """Words for error messages: what the caller was doing."""
        return f"calling {method}() on {', '.join(self.endpoints) or 'no endpoint'}"

    # -- what comes back -------------------------------------------------------
    def receive(self, payload: Any, now: float) -> Optional[Tuple[str, ClientCall, Any]]:
        """Route one incoming payload to its call; return (kind, call, value), or None if it is for nobody."""
        table = self.table
        try:
            header, name, args = protocol.decode(payload, self.max_message_size)
        except protocol.ProtocolError as exc:
            call = table.get(exc.header.get("response_to")) if exc.header else None
            log.warning("bad message from the server: %s", printable(str(exc), 300))
            if call is None:
                return None
            self.finish(call)
            return (ERROR, call, exc)
        if self.trace is not None:
            self.trace("recv", header, name, args)
        call = table.get(header.get("response_to"))
        if call is None:
            log.debug("event %s for no call in flight (late reply or heartbeat; ignored)", printable(name))
            return None
        call.last_recv = now
        if name == protocol.STREAM:
            window = call.window
            if window is None:
                window = call.window = StreamWindow(self.stream_window)
            window.received()
            if window.overflowing:
                self.finish(call)
                return (ERROR, call, protocol.ProtocolError("the server sent more stream items than it was granted"))
            return (ITEM, call, args)
        if name == protocol.OK:
            self.finish(call)
            if call.window is not None:
                return (ERROR, call, protocol.ProtocolError("the server sent OK in the middle of a stream"))
            if type(args) is list and args:
                return (RESULT, call, args[0])
            return (ERROR, call, protocol.ProtocolError(f"OK reply without a result: {args!r}"))
        if name == protocol.ERR:
            self.finish(call)
            return (ERROR, call, self._remote_error(call, args))
        if name == protocol.STREAM_DONE:
            if call.window is None:
                call.window = StreamWindow(self.stream_window)
            self.finish(call)
            return (END, call, None)
        if name not in protocol.CONTROL_EVENTS:
            log.warning("unexpected event %s in reply to %s() (ignored)", printable(name), call.method)
        return None

    def _remote_error(self, call: ClientCall, args: Any) -> Exception:
        name, msg, tb = protocol.unwrap_error(args)
        if call.kwnames and name == "NameError" and protocol.KWCALL in msg:
            return KeywordArgumentsUnsupported(
                f"{call.method}() was called with keyword arguments ({', '.join(call.kwnames)}), "
                "but the server cannot take them (it is a zerorpc server, not zrpc): "
                "pass them positionally"
            )
        if name == "AuthenticationFailed":
            return AuthenticationFailed(msg)
        if name == "ServerBusy":
            return ServerBusy(name, msg, tb)
        return RemoteError(name, msg, tb)

    def finish(self, call: ClientCall) -> None:
        """The call is over (its result, error or end arrived): later events for it are ignored."""
        self.table.discard(call)

    def in_flight(self, call: ClientCall) -> bool:
        return self.table.get(call.key) is call

    # -- giving up, credit, loss -----------------------------------------------
    def expire(self, call: ClientCall) -> Optional[Tuple[TimeoutExpired, bytes]]:
        """The call's timeout passed: (the caller's error, the cancel to send), or None if it is over."""
        if not self.in_flight(call):
            return None
        self.finish(call)
        return (TimeoutExpired(call.timeout, self.calling(call.method)),
                self.encode(call.channel_id, protocol.CANCEL, []))

    def abandon(self, call: ClientCall) -> Optional[bytes]:
        """The caller stopped reading a stream (or closed the client): the cancel to send, if still open."""
        if not self.in_flight(call):
            return None
        self.finish(call)
        return self.encode(call.channel_id, protocol.CANCEL, [])

    def grant(self, call: ClientCall) -> Optional[Tuple[int, bytes]]:
        """Credit due to a stream's server, as (amount, encoded _zpc_more); None if none is due.

        The driver calls ``call.window.sent(amount)`` once it went out.
        """
        window = call.window
        if window is None or not self.in_flight(call):
            return None
        amount = window.due()
        if not amount:
            return None
        return amount, self.encode(call.channel_id, protocol.MORE, [amount])

    def lost(self, call: Channel) -> LostRemote:
        """The error of a call whose server went silent (already forgotten by the heartbeat sweep)."""
        assert isinstance(call, ClientCall)
        return LostRemote(f"lost the server while {self.calling(call.method)}: "
                          f"no heartbeat for {self.lost_after:g}s")

    def disconnected(self, call: ClientCall, endpoints: Sequence[str]) -> LostRemote:
        """The error of a call whose connection dropped before its reply came."""
        return LostRemote(f"lost the server while calling {call.method}() on {', '.join(endpoints)}: "
                          "the connection dropped (the server died or restarted, or closed the "
                          "connection over a message larger than its size limit)")

    def open_calls(self) -> List[ClientCall]:
        return [call for call in self.table if isinstance(call, ClientCall)]
