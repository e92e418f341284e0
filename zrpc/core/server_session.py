"""The server's half of zerorpc v3 without I/O: which call starts, waits, gets credit or is cancelled.

Theory of operation
-------------------
The driver hands every incoming message to :meth:`ServerSession.receive`
with the clock, and acts on the one action it returns:

========  =====================================  ===========================
action    meaning                                the driver
========  =====================================  ===========================
START     a call may run now                     runs ``call`` in a task
QUEUED    a call waits for room in the pool      notes what it knows of it
SEND      an answer outside any running call     sends the frames, no wait
CREDIT    the caller granted stream credit       wakes the call's sender
CANCEL    the caller gave up on a call           interrupts the call's task
========  =====================================  ===========================

``None`` means nothing to do (a heartbeat, or a bad message already
logged). The session owns the pool: a call beyond ``pool_size`` waits in
the backlog, keeps its channel (so it gets heartbeats) and is handed out by
:meth:`finished` when a running call ends. Replies are encoded here
(:meth:`reply`, :meth:`error_reply`), stream credit is counted here, and
every refusal (``ServerStopping``, ``ProtocolError``) is decided here, once
for every driver.

This module never touches a socket, a greenlet or a clock of its own.
"""
from __future__ import annotations

import logging
import traceback
from collections import deque
from typing import Any, Deque, Hashable, List, Optional, Tuple

from . import protocol
from .channel import Channel
from .protocol import printable
from .intercept import CallInfo, request_timeout
from .methods import MethodTable
from .session import Session, Tracer

__all__ = ["ServerSession", "Stopping", "ServerCall", "Cancellation", "DEFAULT_MAX_PENDING", "DEADLINE_PASSED",
           "DEADLINE_TICK", "START", "QUEUED", "SEND", "CREDIT", "CANCEL", "STOPPING_REPLY"]

log = logging.getLogger("zrpc.server")

START, QUEUED, SEND, CREDIT, CANCEL = "start", "queued", "send", "credit", "cancel"

Action = Tuple[Any, ...]
_NONE: List[Any] = []  # shared and never appended to: "no call may start"


class Cancellation:
    """Why a call is stopped; ``reply`` is the (name, message) ERR to send its caller, if any."""

    __slots__ = ("reason", "reply")

    def __init__(self, reason: str, reply: Optional[Tuple[str, str]] = None) -> None:
        self.reason = reason
        self.reply = reply


#: The ERR (name, message) a new call gets from a server that is stopping (before the call ran).
STOPPING_REPLY = ("ServerStopping", "the server is shutting down; retry elsewhere")

CANCELLED_BY_CALLER = Cancellation("cancelled by the caller")
CALLER_LOST = Cancellation("caller lost")
SERVER_STOPPED = Cancellation("server stopped", ("ServerStopped", "the server stopped before the call finished"))
DEADLINE_PASSED = Cancellation("its deadline passed", ("DeadlineExceeded", "the call's deadline (the caller's "
                                                        "timeout) passed before it finished on the server"))

#: The longest a call may outlive its deadline before the sweep cancels it (seconds).
#: Deadlines are checked by the periodic sweep that also sends heartbeats: no timer per call.
DEADLINE_TICK = 0.25


class ServerCall(Channel):
    """One call being served: its envelope, request, credit and fate.

    ``task``, ``credit_ready`` and ``connection`` belong to the driver (its
    task, the waiter of a sender out of credit, the connection's metadata);
    the session never looks at them.
    """

    __slots__ = ("envelope", "method", "args", "credit", "waiting", "running", "cancelled", "task",
                 "credit_ready", "connection", "header", "deadline", "started", "size", "reply_bytes", "info")

    def __init__(self, key: Hashable, channel_id: Any, envelope: List[bytes], method: str, args: Any,
                 now: float, header: Any = None, size: int = 0) -> None:
        super().__init__(key, channel_id, key[0], now)
        self.envelope = envelope
        self.method = method
        self.args = args
        self.header = header
        self.started = now
        self.size = size  # bytes of the request
        self.reply_bytes = 0  # bytes of every reply sent, kept by the driver
        timeout = request_timeout(header) if header is not None and len(header) > 2 else None
        self.deadline = None if timeout is None else now + timeout
        #: Its CallInfo, made when an interceptor or current_call() first needs it.
        self.info: Optional[CallInfo] = None
        self.credit = 1  # the implicit initial credit of the protocol
        self.waiting = False  # in the backlog, waiting for room in the pool
        self.running = False  # set by the driver while the call's task runs it
        self.cancelled: Optional[Cancellation] = None
        self.task: Any = None
        self.credit_ready: Any = None
        self.connection: Any = None  # the driver's handle on the caller's connection metadata

    def make_info(self) -> CallInfo:
        """This call's CallInfo (made once)."""
        info = self.info
        if info is None:
            info = self.info = CallInfo(self.method, self.header or {}, self.connection, self.deadline,
                                        self.started, self.size)
        return info


#: Calls that may wait for room in the pool by default; more are refused with ServerBusy.
DEFAULT_MAX_PENDING = 100_000


class Stopping:
    """When a stopping server may close: the refusals' half of a server session (and of the
    router of ``zrpc serve --workers``, which refuses new calls itself).

    The subclass sets ``_last_refusal = now`` whenever it answers ``ServerStopping``.
    """

    stopping = False
    _stop_started = 0.0
    _last_refusal = 0.0

    #: After its calls are over, a stopping server keeps answering ServerStopping until no call came for
    #: this long (seconds), so that clients still sending to it learn and go elsewhere instead of losing
    #: calls to a closed socket; at most STOP_LINGER_MAX seconds after the stop began.
    STOP_QUIET = 0.1
    STOP_LINGER_MAX = 1.0

    def stop(self, now: float) -> None:
        """Refuse new calls from now on (ServerStopping: they never run, so callers may retry elsewhere)."""
        if not self.stopping:
            self.stopping = True
            self._stop_started = self._last_refusal = now

    def refusing_for(self, now: float) -> float:
        """Seconds a stopping server whose calls are over should still answer before closing (0: close now)."""
        end = min(self._last_refusal + self.STOP_QUIET, self._stop_started + self.STOP_LINGER_MAX)
        return max(0.0, end - now)


class ServerSession(Stopping, Session):
    """The protocol state of one server: open calls, the pool and its backlog, and the method table."""

    def __init__(
        self,
        methods: MethodTable,
        *,
        heartbeat: Optional[float],
        pool_size: Optional[int],
        send_tracebacks: bool,
        max_pending: Optional[int] = None,
        stream_generators: bool,
        max_message_size: Optional[int],
        trace: Optional[Tracer] = None,
    ) -> None:
        if pool_size is not None and pool_size < 1:
            raise ValueError("pool_size must be at least 1 (or None for no limit)")
        super().__init__(heartbeat, max_message_size, trace)
        self.methods = methods
        self._stream_funcs = {f: methods.streams(f) for f in methods.public.values()}
        self.pool_size = pool_size
        self.max_pending = max_pending
        self.send_tracebacks = send_tracebacks
        self.stream_generators = stream_generators
        self.stopping = False
        self._last_refusal = 0.0  # when a call was last refused with ServerStopping
        self._stop_started = 0.0
        self.running = 0
        self.queued = 0  # calls in the backlog that are still wanted
        # Counters for observers (zrpc.metrics reads them when scraped): no hook on the fast path.
        self.bad_messages = 0
        self.callers_lost = 0
        self.refused_busy = 0
        self.cancelled_queued = 0  # cancelled before they started: no interceptor or access log saw them
        self._next_heartbeats = 0.0  # the heartbeat sweep keeps its own pace when deadlines sweep faster
        self._backlog: Deque[ServerCall] = deque()

    @property
    def calls_in_flight(self) -> int:
        """Calls running or waiting in line."""
        return self.running + self.queued

    @property
    def idle(self) -> bool:
        return not self.running and not self.queued

    # -- incoming messages -----------------------------------------------------
    def receive(self, frames: List[Any], now: float) -> Optional[Action]:
        """Take one incoming message ``[identity..., b"", payload]``; return the action it calls for."""
        if len(frames) < 2:
            log.warning("dropped a message of %d frame(s): no routing envelope", len(frames))
            return None
        envelope = frames[:-1]
        peer = frames[0] if len(frames) == 3 else tuple(envelope)
        try:
            header, name, args = protocol.decode(frames[-1], self.max_message_size)
        except protocol.ProtocolError as exc:
            header = exc.header
            self.bad_messages += 1
            log.warning("bad message from peer %s: %s", peer_repr(peer), printable(str(exc), 300))
            if header is not None and header.get("response_to") is None:
                return self.reject(envelope, header["message_id"], "ProtocolError", str(exc))
            return None
        if self.trace is not None:
            self.trace("recv", header, name, args)
        response_to = header.get("response_to")
        if response_to is not None:
            call = self.table.get((peer, response_to))
            if call is None:
                log.debug("event %s for a closed channel from %s (ignored)", printable(name), peer_repr(peer))
                return None
            call.last_recv = now
            if name == protocol.MORE:
                return self._grant(call, args)
            if name == protocol.CANCEL:
                log.debug("call %s cancelled by its caller", printable(call.method))
                return (CANCEL, call, CANCELLED_BY_CALLER)
            if name != protocol.HEARTBEAT:
                log.debug("unexpected event %s on an open channel (ignored)", printable(name))
            return None
        return self._accept(peer, envelope, header, name, args, now, len(frames[-1]))

    def _accept(self, peer: Any, envelope: List[bytes], header: Any, name: str, args: Any,
                now: float, size: int) -> Optional[Action]:
        message_id = header["message_id"]
        if self.stopping:
            self._last_refusal = now
            return self.reject(envelope, message_id, *STOPPING_REPLY)
        if name in protocol.CONTROL_EVENTS:
            log.debug("control event %s outside any channel (ignored)", name)
            return None
        key = (peer, message_id)
        if key in self.table.channels:
            log.warning("duplicate message id %s from %s (ignored)", printable(message_id), peer_repr(peer))
            return None
        if self.pool_size is None or self.running < self.pool_size:
            call = ServerCall(key, message_id, envelope, name, args, now, header, size)
            self.table.add(call)
            self.running += 1
            return (START, call)
        if self.max_pending is not None and self.queued >= self.max_pending:
            self.refused_busy += 1
            log.warning("refused a call to %s(): %d calls already wait (max_pending)",
                        printable(name), self.queued)
            return self.reject(envelope, message_id, "ServerBusy",
                               f"the server has {self.queued} calls waiting already (max_pending); "
                               "retry later or elsewhere")
        call = ServerCall(key, message_id, envelope, name, args, now, header, size)
        self.table.add(call)
        self._backlog.append(call)
        call.waiting = True
        self.queued += 1
        return (QUEUED, call)

    def _grant(self, call: ServerCall, args: Any) -> Optional[Action]:
        try:
            amount = protocol.parse_credit(args)
        except protocol.ProtocolError as exc:
            log.warning("bad %s for %s() (ignored): %s", protocol.MORE, printable(call.method), exc)
            return None
        call.credit = min(call.credit + amount, protocol.MAX_CREDIT)
        return (CREDIT, call)

    def reject(self, envelope: List[bytes], message_id: Any, name: str, message: str) -> Action:
        """A SEND action answering request ``message_id`` with ERR ``name``, outside any channel."""
        payload = self.encode(message_id, protocol.ERR, protocol.error_args(name, message, ""))
        return (SEND, [*envelope, payload])

    # -- the pool --------------------------------------------------------------
    def finished(self, call: ServerCall) -> List[ServerCall]:
        """A running call ended: forget it and return the queued calls that may start now."""
        self.table.discard(call)
        self.running -= 1
        return self._next()

    def _next(self) -> List[ServerCall]:
        backlog = self._backlog
        if not backlog:
            return _NONE
        ready = []
        while backlog and (self.pool_size is None or self.running < self.pool_size):
            call = backlog.popleft()
            call.waiting = False
            if call.cancelled is None:
                self.queued -= 1
                self.running += 1
                ready.append(call)
        return ready

    def cancel(self, call: ServerCall, why: Cancellation, *, refused: bool = False) -> Tuple[bool, Optional[Action]]:
        """Mark ``call`` cancelled; return (interrupt its task?, SEND action answering a queued call).

        A call cancelled before it started running (waiting in line, or
        launched but not yet running) is counted in ``cancelled_queued``,
        unless ``refused`` (the server turned it away: not a cancel). A call
        cancelled twice, or one that already ended, needs nothing.
        """
        if call.cancelled is not None:
            return False, None
        call.cancelled = why
        self.table.discard(call)
        if not call.running and not refused:
            self.cancelled_queued += 1
        if call.waiting:  # still in the backlog: it will be skipped
            self.queued -= 1
            log.info("call %s() cancelled before it ran: %s", printable(call.method), why.reason)
            if why.reply:
                return False, self.reject(call.envelope, call.channel_id, *why.reply)
            return False, None
        return call.running, None

    @property
    def tick(self) -> Optional[float]:
        """How often the driver sweeps: for heartbeats, and at least every DEADLINE_TICK for deadlines."""
        tick = self.table.tick
        return DEADLINE_TICK if tick is None else min(tick, DEADLINE_TICK)

    def heartbeats(self, now: float) -> Tuple[List[Tuple[Channel, bytes]], List[Channel]]:
        """As :meth:`Session.heartbeats`, at most once per heartbeat tick (the driver sweeps more often
        for deadlines)."""
        tick = self.table.tick
        if tick is None or now < self._next_heartbeats:
            return [], []
        self._next_heartbeats = now + tick * 0.9  # slack: a sweep a little early still counts
        return super().heartbeats(now)

    def overdue(self, now: float) -> List[ServerCall]:
        """The calls (running or queued) whose deadline has passed at ``now``; the driver cancels them."""
        return [call for call in self.table.channels.values()
                if isinstance(call, ServerCall) and call.deadline is not None and call.deadline <= now
                and call.cancelled is None]

    def open_calls(self) -> List[ServerCall]:
        """Every call running or queued (for a stop that cancels them)."""
        return [call for call in self.table if isinstance(call, ServerCall)]

    def lost(self, call: Channel) -> Cancellation:
        """A caller went silent: log it and say how to stop its call."""
        assert isinstance(call, ServerCall)
        self.callers_lost += 1
        log.warning("lost the caller of %s() (no heartbeat for %gs); cancelling it",
                    printable(call.method), self.lost_after)
        return CALLER_LOST

    # -- replies ---------------------------------------------------------------
    def reply(self, call: ServerCall, name: str, args: Any) -> bytes:
        """Encode a reply on ``call``'s channel (raises TypeError if msgpack refuses ``args``)."""
        return self.encode(call.channel_id, name, args)

    def error_reply(self, call: ServerCall, exc: BaseException) -> bytes:
        """Log ``exc`` raised by ``call`` and encode the ERR its caller gets."""
        if isinstance(exc, NameError) and str(exc) == call.method:
            log.warning("unknown method %s called", printable(call.method))
            tb = f"NameError: {call.method}\n"
        else:
            log.warning("call %s() raised %s: %s", printable(call.method), type(exc).__name__,
                        printable(str(exc), 200))
            log.debug("traceback of %s()", printable(call.method), exc_info=exc)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if not self.send_tracebacks:
            tb = "(traceback withheld by the server)"
        message = str(exc)
        if isinstance(exc, TypeError) and "serialize" in message:
            message = f"the result of {call.method}() cannot be sent: {message}"
        return self.encode(call.channel_id, protocol.ERR, protocol.error_args(type(exc).__name__, message, tb))

    def cancelled_reply(self, call: ServerCall, why: Cancellation) -> Optional[bytes]:
        """The ERR a cancelled call's caller gets, if any."""
        log.info("call %s() stopped: %s", printable(call.method), why.reason)
        if why.reply is None:
            return None
        return self.encode(call.channel_id, protocol.ERR, protocol.error_args(*why.reply, ""))

    def streams(self, func: Any, is_generator: bool) -> bool:
        """True if what ``func`` returned (a generator or not) is sent as a stream."""
        return self._stream_funcs.get(func, False) or (self.stream_generators and is_generator)


def peer_repr(peer: Any) -> str:
    """A caller's routing identity as hex, safe to log."""
    if isinstance(peer, bytes):
        return peer.hex()
    return "/".join(p.hex() for p in peer)
