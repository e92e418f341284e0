"""The client's half of zerorpc v3 without I/O: building requests and routing what comes back.

Theory of operation
-------------------
:meth:`ClientSession.request` encodes a call; the driver hands it to one
of its sockets, trying them in :meth:`ClientSession.send_order` (fewest
calls in flight first, decided by :mod:`zrpc.core.balancing`), and reports
where it went with :meth:`sent`. From then on the call is a channel in the
table, and every later event of it (heartbeats, credit, cancel) travels on
that socket, so it reaches the server that took the call.

:meth:`receive` routes an incoming payload to its call and says what
happened, as ``(kind, call, value)``:

=======  =================================================================
kind     value
=======  =================================================================
RESULT   the method's result; the call is over
ERROR    the exception the caller gets (RemoteError, ProtocolError...)
ITEM     the next item of a stream (its credit already counted)
END      the stream is complete
RETRY    the server refused the call before it ran (``ServerStopping``) and
         another can take it: send the request again (:meth:`resend_order`);
         ``value`` is the error for the caller if no server takes it
=======  =================================================================

What happens to calls also tells the balancer which servers answer: a
call's heartbeat loss, or its timeout with no word at all from its server,
takes that server out of the rotation, and :meth:`maintain` says when to
probe it (a ``_zerorpc_ping`` of the client's own, answered here), which
removed servers to close, and which DNS names to resolve again.

Timeouts (:meth:`expire`), giving up on a stream (:meth:`abandon`), credit
(:meth:`grant`) and heartbeat loss (:meth:`lost`) are decided here too; the
driver owns only futures, timers and the buffers its readers wait on.
This module never touches a socket, a greenlet or a clock of its own.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import protocol
from .balancing import Backend, Balancer, ResolvedName
from .channel import Channel, StreamWindow
from .protocol import printable
from .errors import (
    AuthenticationFailed,
    KeywordArgumentsUnsupported,
    LostRemote,
    RemoteError,
    ServerBusy,
    ServerStopping,
    TimeoutExpired,
)
from .intercept import TIMEOUT_KEY, serving
from .session import Session, Tracer

__all__ = ["ClientSession", "ClientCall", "RESULT", "ERROR", "ITEM", "END", "RETRY"]

log = logging.getLogger("zrpc.client")

RESULT, ERROR, ITEM, END, RETRY = "result", "error", "item", "end", "retry"


class ClientCall(Channel):
    """One call in flight. ``transport`` is the socket it went out on, ``backend`` that server's state.

    ``future``, ``timer`` and ``stream`` belong to the driver (what the
    caller waits on, the timeout timer, the stream buffer). ``payload`` is
    the request, kept while it may have to be sent to another server.
    """

    __slots__ = ("method", "kwnames", "timeout", "transport", "window", "future", "timer", "stream",
                 "backend", "payload", "sent_at", "counted", "attempts", "probe", "deadline")

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
        self.backend: Optional[Backend] = None
        self.payload: Optional[bytes] = None
        self.sent_at = now
        self.counted = False  # counted in its backend's calls in flight
        self.attempts = 0
        self.probe = False  # the client's own _zerorpc_ping to an ejected server
        #: When the caller stops waiting (``time.monotonic()`` based), or None.
        self.deadline = None if timeout is None else now + timeout


class ClientSession(Session):
    """The protocol state of one client: calls in flight and the choice of server for each."""

    #: How often :meth:`maintain` runs without heartbeats (seconds).
    IDLE_TICK = 1.0

    def __init__(self, *, heartbeat: Optional[float], stream_window: int, max_message_size: Optional[int],
                 trace: Optional[Tracer] = None, inherit_deadline: bool = True) -> None:
        super().__init__(heartbeat, max_message_size, trace)
        #: Calls made while serving a call get at most what remains of its deadline.
        self.inherit_deadline = inherit_deadline
        StreamWindow(stream_window)  # validate now, not at the first stream
        self.stream_window = stream_window
        #: Where calls go, for error messages; the driver keeps it current.
        self.endpoints: List[str] = []
        interval = self.heartbeat or self.IDLE_TICK
        #: The servers and the choice between them.
        self.balancer = Balancer(probe_backoff=interval, max_backoff=6 * interval,
                                 probe_timeout=max(self.lost_after, 5 * self.IDLE_TICK) if not self.heartbeat
                                 else self.lost_after)
        self.balancer.forget_probe = self.table.discard  # a probe it gave up on leaves the table
        #: The ``tcp://NAME:PORT`` endpoints whose addresses are servers.
        self.names: List[ResolvedName] = []

    @property
    def tick(self) -> Optional[float]:
        """How often the driver runs :meth:`heartbeats` and :meth:`maintain` (seconds)."""
        return self.table.tick or self.IDLE_TICK

    # -- starting a call -------------------------------------------------------
    def request(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any], timeout: Optional[float],
                now: float, headers: Optional[Dict[str, Any]] = None,
                message_id: Optional[bytes] = None) -> Tuple[ClientCall, bytes]:
        """A new call and its encoded request (not in flight until :meth:`sent`).

        ``headers`` (already validated) go into the request header, with the
        timeout (``zrpc_timeout``). Made while serving a call, the call's
        timeout is at most what remains of that call's deadline (see
        ``inherit_deadline``); ``call.timeout`` is the one that applies.
        Raises TypeError if msgpack cannot encode the arguments.
        """
        if message_id is None:
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
        call = ClientCall(message_id, method, kwnames, timeout, now)
        if self.balancer.active > 1:
            call.payload = payload  # another server may have to take it (ServerStopping)
        return call, payload

    def with_remaining(self, call: ClientCall, payload: bytes, now: float) -> bytes:
        """``call``'s request ``payload`` with ``zrpc_timeout`` set to what is left of its timeout at ``now``
        (for a request sent late: after waiting for a server, or again after ServerStopping)."""
        if call.deadline is None:
            return payload
        header, name, args = protocol.decode(payload, None)
        header[TIMEOUT_KEY] = max(0.0, call.deadline - now)
        payload = protocol.encode(header, name, args)
        if call.payload is not None:
            call.payload = payload  # what a retry would send
        return payload

    def next_message_id(self) -> bytes:
        """A new message id, for a request made later with ``request(..., message_id=)``."""
        return next(self._ids)

    def send_order(self) -> List[Backend]:
        """The servers to offer a new request to, in order (fewest calls in flight first)."""
        return self.balancer.order()

    def resend_order(self, call: ClientCall) -> List[Backend]:
        """The servers that may take a call refused with ServerStopping (only those in the rotation)."""
        return self.balancer.order(retry=True)

    def sent(self, call: ClientCall, backend: Backend, now: float) -> None:
        """The request of ``call`` went out to ``backend``: the call is in flight."""
        call.backend = backend
        call.transport = backend.transport
        call.attempts += 1
        call.counted = True
        self.balancer.sent(backend)
        # The heartbeat schedule starts when the request actually went out.
        call.sent_at = call.last_sent = call.last_recv = call.last_ping = now
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
        if call.probe:
            self._probe_answered(call, name, args)
            return None
        if name == protocol.ERR:
            self.finish(call)
            error = self._remote_error(call, args)
            if type(error) is ServerStopping:
                return self._stopping(call, error, now)
            self.balancer.heard(call.backend, now)
            return (ERROR, call, error)
        self.balancer.heard(call.backend, now)
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
        if name == "ServerStopping":
            return ServerStopping(name, msg, tb)
        if name == "LostRemote" and not tb:  # a router whose worker died (a method's error has a traceback)
            return LostRemote(msg)
        return RemoteError(name, msg, tb)

    def _stopping(self, call: ClientCall, error: ServerStopping, now: float) -> Tuple[str, ClientCall, Any]:
        """A server refused ``call`` before running it because it is stopping: out of the rotation, retry elsewhere."""
        balancer = self.balancer
        balancer.eject(call.backend, now, "it is stopping (ServerStopping)", stopping=True)
        if call.payload is not None and call.attempts < len(balancer.backends) and balancer.order(retry=True):
            call.payload = self.with_remaining(call, call.payload, now)  # not all of its timeout again
            return (RETRY, call, error)
        call.payload = None
        return (ERROR, call, error)

    def finish(self, call: ClientCall) -> None:
        """The call is over (its result, error or end arrived): later events for it are ignored."""
        self.table.discard(call)
        if call.counted:
            call.counted = False
            self.balancer.finished(call.backend)

    def in_flight(self, call: ClientCall) -> bool:
        return self.table.get(call.key) is call

    # -- giving up, credit, loss -----------------------------------------------
    def expire(self, call: ClientCall) -> Optional[Tuple[TimeoutExpired, bytes]]:
        """The call's timeout passed: (the caller's error, the cancel to send), or None if it is over.

        If nothing at all came from its server since the call was sent, and
        the call waited long enough for a healthy server to have sent a
        heartbeat (1.5 intervals), the server is taken out of the rotation.
        """
        if not self.in_flight(call):
            return None
        self.finish(call)
        backend = call.backend
        interval = self.table.interval
        # Silence means something only once a healthy server would have spoken: with heartbeats, it
        # sends one on every call older than an interval (a shorter timeout proves nothing).
        if backend.last_heard < call.sent_at and (interval is None or (call.timeout or 0.0) >= 1.5 * interval):
            self.balancer.eject(backend, call.sent_at + (call.timeout or 0.0),
                                f"a call timed out after {call.timeout:g}s with no word from it")
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
        """The error of a call whose server went silent (already forgotten by the heartbeat sweep).

        That server is taken out of the rotation.
        """
        assert isinstance(call, ClientCall)
        self.balancer.eject(call.backend, call.last_recv + self.lost_after,
                            f"no heartbeat for {self.lost_after:g}s")
        return LostRemote(f"lost the server while {self.calling(call.method)}: "
                          f"no heartbeat for {self.lost_after:g}s")

    def disconnected(self, call: ClientCall, endpoints: Sequence[str]) -> LostRemote:
        """The error of a call whose connection dropped before its reply came."""
        return LostRemote(f"lost the server while calling {call.method}() on {', '.join(endpoints)}: "
                          "the connection dropped (the server died or restarted, or closed the "
                          "connection over a message larger than its size limit)")

    def open_calls(self) -> List[ClientCall]:
        """The user's calls in flight (not the client's own probes)."""
        return [call for call in self.table if isinstance(call, ClientCall) and not call.probe]

    def heartbeats(self, now: float) -> Tuple[List[Tuple[Channel, bytes]], List[Channel]]:
        """As :meth:`Session.heartbeats`; a lost probe only delays the next probe of its server."""
        pings, lost = super().heartbeats(now)
        if lost:
            balancer = self.balancer
            for call in [c for c in lost if isinstance(c, ClientCall) and c.probe]:
                lost.remove(call)
                if call.backend.probe is call:  # an older probe's loss says nothing of the current one
                    balancer.probe_failed(call.backend, now)
        return pings, lost

    # -- servers: probes, removal, DNS -------------------------------------------
    def maintain(self, now: float) -> Tuple[List[Tuple[ClientCall, bytes]], List[Backend], List[ResolvedName]]:
        """What the driver does every tick: (probes to send, removed servers to close, names to resolve).

        A probe is a ``_zerorpc_ping`` of the client's own; the driver sends
        it on ``call.backend.transport`` if it can and reports it with
        :meth:`probe_sent` (one that could not go is due again next tick).
        """
        balancer = self.balancer
        probes = []
        for backend in balancer.probes_due(now):
            call, payload = self.request("_zerorpc_ping", (), {}, None, now)
            call.probe = True
            call.backend = backend
            call.transport = backend.transport
            call.payload = None
            probes.append((call, payload))
        names = [name for name in self.names if name.due(now)]
        for name in names:
            name.started(now)
        return probes, balancer.drained(), names

    def probe_sent(self, call: ClientCall, now: float) -> None:
        """A probe went out: its answer brings its server back (see :meth:`receive`)."""
        call.sent_at = call.last_sent = call.last_recv = call.last_ping = now
        call.backend.probe = call
        self.table.add(call)

    def _probe_answered(self, call: ClientCall, name: str, args: Any) -> None:
        if name in protocol.CONTROL_EVENTS:
            return  # a heartbeat: the answer is still to come
        self.table.discard(call)
        backend = call.backend
        if backend.probe is not call:
            return  # an old probe answering late: the current one decides
        if name == protocol.ERR and protocol.unwrap_error(args)[0] == "ServerStopping":
            backend.stopping = True
            self.balancer.probe_failed(backend, call.last_recv)
        elif name in (protocol.OK, protocol.ERR):
            backend.last_heard = call.last_recv
            self.balancer.readmit(backend)
