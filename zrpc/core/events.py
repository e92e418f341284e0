"""One-way events (zerorpc's Publisher/Subscriber and Pusher/Puller) without I/O.

An event is the same msgpack ``[header, name, args]`` frame as a request,
sent alone (no envelope) on a PUSH or PUB socket, and nobody replies. This
module owns both ends of it:

* :class:`EventEncoder` builds events: a plain ``name(*args)`` exactly as
  zerorpc does, a call with keyword arguments as ``_zrpc_kwcall`` with
  ``[name, args, kwargs]`` (the request convention of
  :data:`zrpc.core.protocol.KWCALL`), and, for a publisher, a sequence number
  in the header key :data:`SEQUENCE` so subscribers can count what PUB
  dropped. zerorpc ignores header keys it does not know.
* :class:`EventDispatcher` turns a received payload into the method to call
  (:class:`Delivery`), or into nothing: a bad frame, a name this receiver
  does not listen to, a method it does not have. It counts each case and
  logs it without letting a remote flood the log.
* :class:`GapCounter` counts the events missing between the sequence
  numbers of each publisher.
* :class:`IncompleteHandshakes` spots the migration trap of a zerorpc Pusher or
  Publisher aimed at a zrpc Server (a ROUTER): libzmq refuses the socket
  type after accepting the TCP connection and reports nothing else.

Nothing here touches a socket, a greenlet or a clock: the driver passes
``now``.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, FrozenSet, Iterable, Mapping, NamedTuple, Optional

from . import protocol
from .methods import MethodTable
from .protocol import printable
from .session import DEFAULT_MAX_MESSAGE_SIZE, Tracer

__all__ = [
    "SEQUENCE",
    "Delivery",
    "EventEncoder",
    "EventDispatcher",
    "GapCounter",
    "IncompleteHandshakes",
]

log = logging.getLogger("zrpc.events")

#: zrpc extension: header key of a publisher's events, ``[source, n]``: ``source``
#: (8 random bytes) names one Publisher object, ``n`` counts its events from 0.
SEQUENCE = "zrpc_seq"

#: A gap is logged at most once per this many seconds (per receiver), with the
#: count of events missed since the previous line.
GAP_LOG_INTERVAL = 10.0
#: Publishers whose sequence a subscriber remembers (the least recently heard is forgotten).
MAX_SOURCES = 1024
#: Distinct unknown method names logged per receiver; later ones are only counted.
MAX_UNKNOWN_LOGGED = 100
#: Receive-side problems (bad frames, bad keyword events) logged per receiver before going quiet.
MAX_PROBLEMS_LOGGED = 100


class Delivery(NamedTuple):
    """A received event to run: ``func(*args, **kwargs)``; ``name`` is the method's name."""

    name: str
    func: Callable[..., Any]
    args: list
    kwargs: dict
    #: The event's decoded header as received (read it, don't change it).
    header: Mapping[str, Any]


class EventEncoder:
    """Builds the payloads of one sender; ``sequenced`` (publishers) adds :data:`SEQUENCE`."""

    def __init__(self, sequenced: bool = False, trace: Optional[Tracer] = None) -> None:
        self._ids = protocol.message_ids()
        self._source: Optional[bytes] = os.urandom(8) if sequenced else None
        self._next = 0
        self.trace = trace
        #: Called for each event; its keys join the header without replacing
        #: any (zerorpc middleware's task context, for ``zrpc.compat``).
        self.extra_header: Optional[Callable[[], Mapping[str, Any]]] = None

    @property
    def sent(self) -> int:
        """Events encoded so far (a publisher's next sequence number)."""
        return self._next

    def encode(self, name: str, args: Iterable[Any] = (), kwargs: Optional[Dict[str, Any]] = None) -> bytes:
        """The payload of event ``name(*args, **kwargs)``.

        Raises TypeError if a value cannot be packed by msgpack, or if ``name``
        is not a str; nothing is counted then.
        """
        if type(name) is not str:
            raise TypeError(f"an event name must be a str, got {type(name).__name__}")
        header = protocol.new_header(next(self._ids))
        if kwargs:
            wire_name, wire_args = protocol.KWCALL, [name, list(args), dict(kwargs)]
        else:
            wire_name, wire_args = name, list(args)
        if self._source is not None:
            header[SEQUENCE] = [self._source, self._next]
        if self.extra_header is not None:
            for key, value in self.extra_header().items():
                header.setdefault(key, value)
        payload = protocol.encode(header, wire_name, wire_args)
        self._next += 1  # only once packing succeeded: a refused value leaves no gap
        if self.trace is not None:
            self.trace("send", header, wire_name, wire_args)
        return payload


class GapCounter:
    """Counts events missing from each publisher's sequence, and says when to log about it.

    The first event heard from a source only sets its baseline (a late
    subscriber has missed nothing). A number that does not move forward
    (bad input: one publisher never repeats one) resets the baseline and is
    never counted as a drop.
    """

    def __init__(self, log_interval: float = GAP_LOG_INTERVAL, max_sources: int = MAX_SOURCES) -> None:
        self.dropped = 0
        self._last: "OrderedDict[Any, int]" = OrderedDict()
        self._log_interval = log_interval
        self._max_sources = max_sources
        self._logged_at: Optional[float] = None
        self._unreported = 0

    def observe(self, sequence: Any, now: float) -> Optional[str]:
        """Note an event's :data:`SEQUENCE` value; return a warning to log, or None.

        Values that are not ``[bytes or str, int]`` are ignored (a zerorpc
        publisher sends none).
        """
        if not (type(sequence) is list and len(sequence) == 2 and type(sequence[0]) in (bytes, str)
                and type(sequence[1]) is int):
            return None
        source, n = sequence
        last = self._last.pop(source, None)
        self._last[source] = n
        if last is None and len(self._last) > self._max_sources:
            self._last.popitem(last=False)
        if last is None or n <= last + 1:
            return None
        missed = n - last - 1
        self.dropped += missed
        self._unreported += missed
        if self._logged_at is not None and now - self._logged_at < self._log_interval:
            return None
        self._logged_at = now
        missed, self._unreported = self._unreported, 0
        return (f"missed {missed} event(s) from a publisher (total {self.dropped}): this subscriber was "
                f"slower than the publisher and its queue reached the high-water mark, where PUB drops "
                f"(see the README's Events section; reported at most every {self._log_interval:g}s)")


class EventDispatcher:
    """The receiving end: which method a received event runs, or why it runs nothing.

    ``methods`` is an object, module or dict, served like a Server's (public
    callables only, no built-ins). ``names`` (optional) limits the events
    listened to: others are skipped silently and counted in ``skipped``.
    ``fallback(name, args, kwargs)``, if given, runs every event that has
    no method of its own (instead of it being logged as unknown).
    Counters: ``received`` (events delivered), ``skipped``, ``unknown``
    (a name with no method), ``invalid`` (bad frames or bad keyword events),
    and ``dropped`` (events a publisher sent that never arrived).
    """

    def __init__(self, methods: Any, names: Optional[Iterable[str]] = None,
                 max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
                 trace: Optional[Tracer] = None,
                 fallback: Optional[Callable[[str, list, dict], Any]] = None) -> None:
        self.methods = MethodTable({} if methods is None else methods)
        self.fallback = fallback
        self.names: Optional[FrozenSet[str]] = None
        if names is not None:
            if isinstance(names, str):
                names = [names]
            wanted = frozenset(names)
            missing = sorted(wanted - set(self.methods.public))
            if missing and fallback is None:
                raise ValueError(f"names {missing} have no public method to run them "
                                 f"(methods: {sorted(self.methods.public)})")
            self.names = wanted
        self.max_message_size = max_message_size
        self.trace = trace
        self.gaps = GapCounter()
        self.received = self.skipped = self.unknown = self.invalid = 0
        self._unknown_logged: set = set()
        self._problems_logged = 0

    @property
    def dropped(self) -> int:
        """Events missing from publishers' sequences (PUB dropped them at the high-water mark)."""
        return self.gaps.dropped

    def receive(self, payload: Any, now: float) -> Optional[Delivery]:
        """Decode one event; return what to run, or None (the reason is counted and logged)."""
        try:
            header, name, args = protocol.decode(payload, self.max_message_size)
        except protocol.ProtocolError as exc:
            self.invalid += 1
            self._problem("dropped an event that is not a valid zerorpc v3 frame: %s", exc)
            return None
        if self.trace is not None:
            self.trace("recv", header, name, args)
        sequence = header.get(SEQUENCE)
        if sequence is not None:
            warning = self.gaps.observe(sequence, now)
            if warning is not None:
                log.warning("%s", warning)
        method = args[0] if name == protocol.KWCALL and type(args) is list and args else name
        if type(method) is not str:  # a malformed kwcall: resolve() below says what is wrong
            method = name
        if self.names is not None and method not in self.names:
            self.skipped += 1
            return None
        try:
            method, func, call_args, kwargs = self.methods.resolve(name, args)
        except TypeError as exc:
            self.invalid += 1
            self._problem("dropped event %s: %s", printable(method), exc)
            return None
        except NameError:  # raised only once the shape of args was checked
            func = None
            call_args, kwargs = (args[1], args[2]) if name == protocol.KWCALL else (args, {})
        if func is None or method not in self.methods.public:  # built-ins are for calls, not events
            if self.fallback is not None:
                self.received += 1
                return Delivery(method, _Fallback(self.fallback, method), call_args, kwargs, header)
            self.unknown += 1
            if len(self._unknown_logged) < MAX_UNKNOWN_LOGGED and method not in self._unknown_logged:
                self._unknown_logged.add(method)
                log.warning("no method %s for received event (ignored; further ones are only counted)",
                            printable(method))
            return None
        self.received += 1
        return Delivery(method, func, call_args, kwargs, header)

    def _problem(self, message: str, *args: Any) -> None:
        if self._problems_logged < MAX_PROBLEMS_LOGGED:
            self._problems_logged += 1
            log.warning(message, *args)


class _Fallback:
    """``fallback(name, args, kwargs)`` called the way a method is: ``f(*args, **kwargs)``."""

    __slots__ = ("fallback", "name")

    def __init__(self, fallback: Callable[[str, list, dict], Any], name: str) -> None:
        self.fallback, self.name = fallback, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fallback(self.name, list(args), kwargs)


class IncompleteHandshakes:
    """Spots connections a server's socket opened whose ZMTP handshake never completed.

    Feed it a ROUTER socket's monitor events. With NULL security (the only
    kind zerorpc has), libzmq 4.3 answers a peer of an incompatible socket
    type, such as a zerorpc Pusher or Publisher, by closing the connection
    right after the greeting, and reports nothing but ACCEPTED (or
    CONNECTED) then DISCONNECTED, with at most a HANDSHAKE_FAILED_NO_DETAIL
    in between when the peer noticed first and hung up (EPIPE). That
    pattern is what this class reports (a bare TCP probe, or a CURVE client
    with the wrong server key, looks the same, which the message says).
    Pass as ``completed`` only the events that end a handshake in a way
    reported elsewhere (succeeded, refused by ZAP, mechanism mismatch). One warning per endpoint, then at
    most one every ``interval`` seconds with the count meanwhile.

    libzmq gives the connection's fd with ACCEPTED and DISCONNECTED but not
    with HANDSHAKE_SUCCEEDED, so a completed handshake is matched to the
    oldest connection of its endpoint still waiting for one: exact for
    handshakes that finish in the order they started, the usual case.
    """

    def __init__(self, opened: Iterable[int], disconnected: int, completed: Iterable[int],
                 interval: float = 60.0, max_pending: int = 4096) -> None:
        self._opened = frozenset(opened)
        self._disconnected = disconnected
        self._completed = frozenset(completed)
        self._interval = interval
        self._max_pending = max_pending
        self._pending: Dict[str, "OrderedDict[Any, None]"] = {}  # endpoint -> fds awaiting a handshake
        self._logged_at: Dict[str, float] = {}
        self._unreported: Dict[str, int] = {}
        #: Connections closed before their handshake completed, in all.
        self.incomplete = 0

    def observe(self, event: int, value: Any, endpoint: str, now: float) -> Optional[str]:
        """One monitor event (``value`` is the fd for connection events); return a warning or None."""
        if event in self._opened:
            pending = self._pending.setdefault(endpoint, OrderedDict())
            if len(pending) < self._max_pending:
                pending[value] = None
            return None
        if event in self._completed:  # succeeded, or failed with an event of its own (CURVE, ZAP)
            pending = self._pending.get(endpoint)
            if pending:
                pending.popitem(last=False)
            return None
        if event != self._disconnected:
            return None
        pending = self._pending.get(endpoint)
        if not pending or value not in pending:
            return None
        del pending[value]
        self.incomplete += 1
        self._unreported[endpoint] = self._unreported.get(endpoint, 0) + 1
        last = self._logged_at.get(endpoint)
        if last is not None and now - last < self._interval:
            return None
        self._logged_at[endpoint] = now
        count = self._unreported.pop(endpoint)
        times = "a connection" if count == 1 else f"{count} connections"
        return (f"{printable(endpoint)}: {times} closed before the ZeroMQ handshake completed. A zerorpc "
                f"Pusher or Publisher aimed at this server does that (PUSH/PUB cannot talk to a server's "
                f"ROUTER socket, and its events are lost): receive events with zrpc.Puller or "
                f"zrpc.Subscriber instead. So do a TCP probe, a non-ZeroMQ client, or a CURVE client "
                f"with the wrong server key.")
