"""Which worker serves which channel: the decisions of ``zrpc serve --workers`` without I/O.

Theory of operation
-------------------
A router stands between the clients (a ROUTER on the user's endpoint) and N
worker processes (each a plain zrpc server). It reads only the routing part
of each event (:class:`zrpc.core.protocol.HeaderReader`), never its args.

* A call's first event (no ``response_to``) opens a channel keyed by
  ``(client envelope, message_id)``: it goes to the worker with the fewest
  calls in flight (ties: the one picked least recently, so idle workers take
  turns), preferring workers that are connected. Every later event of the client on that channel
  (heartbeats, ``_zpc_more`` credit, ``_zrpc_cancel``) follows it to the
  same worker; an event for a channel the router does not know is dropped.
* Events from a worker go back to the client by their envelope, whatever
  they are; an ``OK``, ``ERR`` or ``STREAM_DONE`` ends the channel, and
  the worker's call count with it.
* A channel silent both ways for three heartbeat intervals is forgotten
  (the worker has cancelled a call whose caller vanished after two, and
  says nothing then), so a client that disappears leaks nothing.
* A worker that dies loses its channels: the router answers each with
  ``ERR LostRemote`` at once (without a traceback, which zrpc clients turn
  into :class:`zrpc.LostRemote`; zerorpc clients see a RemoteError of that
  name) and drops their later events. Waiting for the callers' heartbeats
  to notice would take up to three intervals for a call younger than one.
  No other channel is touched.
* While stopping (:meth:`stop`), a new call is answered here with ``ERR
  ServerStopping`` (the server session's refusal) and never reaches a
  worker; channels already open keep flowing until their workers have
  drained, and the router answers a little longer as a lone server does
  (:meth:`refusing_for`), so clients still sending learn to go elsewhere.
* A worker that goes silent (frozen by SIGSTOP, a deadlock holding the
  GIL, a swapped-out host) while it has calls in flight is noticed: a busy
  worker always says something within about one heartbeat interval (a
  reply, or the heartbeat every channel older than an interval carries), so
  one that said nothing for :data:`SILENT_INTERVALS` intervals since it got
  work gets no new call, unless every worker is silent. Its callers learn of
  it from their own heartbeats, as with a lone frozen server. The router
  pings it (``_zerorpc_ping``, on an envelope of its own) once per interval
  (:meth:`ChannelRouter.probes`); anything it sends brings it back.
* ``_zrpc_status`` is answered by the router itself (the driver fills in
  what it knows of the processes).
* Who is calling: the router holds the clients' connections, so it tells
  the workers. Every event it forwards carries one more envelope frame right
  after the client's identity, :func:`caller_frame` (the client's IP address
  and CURVE key, read from the connection's metadata, never from anything the
  client sent); a worker started by the router reads it back with
  :class:`ForwardedCaller` and echoes it with its replies, and the router
  takes it off again. A client cannot forge it: whatever frames it adds come
  after the router's.

The driver reads the sockets and the clock and performs the action each
method returns. This module never touches a socket, a process or a clock.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

import msgpack

from . import protocol
from .protocol import HeaderReader
from .server_session import STOPPING_REPLY, Stopping

__all__ = ["ChannelRouter", "WorkerLoad", "STATUS_METHOD", "FORWARD", "DROP", "SEND", "STATUS", "ENDS",
           "caller_frame", "ForwardedCaller"]

log = logging.getLogger("zrpc.workers")

#: The built-in the router answers itself: what ``zrpc status`` calls.
STATUS_METHOD = "_zrpc_status"
FORWARD, DROP, SEND, STATUS = "forward", "drop", "send", "status"
#: Replies that end a channel.
ENDS = frozenset((protocol.OK, protocol.ERR, protocol.STREAM_DONE))
#: A channel silent both ways this many heartbeat intervals is forgotten.
IDLE_INTERVALS = 3
#: A worker with calls in flight that said nothing for this many intervals gets no new call.
SILENT_INTERVALS = 2
#: The envelope of the router's own pings to a silent worker (their answers go nowhere else).
PROBE_PEER = b"zrpc-router-probe"

_DROP = (DROP, None)
#: What every caller frame starts with (a worker ignores an envelope frame without it).
CALLER_PREFIX = b"zrpc-caller\0"


def caller_frame(address: Optional[str], user_id: Optional[str]) -> bytes:
    """The envelope frame telling a worker who the client is: its IP address and CURVE key (or None)."""
    return CALLER_PREFIX + msgpack.packb([address, user_id])


class ForwardedCaller:
    """The caller a router named in :func:`caller_frame`, read like a zmq Frame's metadata.

    ``get("Peer-Address")`` and ``get("User-Id")`` answer what the router
    read off the client's connection (None if it told nothing).
    """

    __slots__ = ("_frame", "_values")

    def __init__(self, frame: bytes) -> None:
        self._frame = frame
        self._values: Optional[Dict[str, Any]] = None

    @classmethod
    def of(cls, envelope: List[Any]) -> "Optional[ForwardedCaller]":
        """The caller named in a worker's request envelope ``[router, client, caller frame, ...]``, or None."""
        if len(envelope) < 3:
            return None
        frame = bytes(envelope[2])
        return cls(frame) if frame.startswith(CALLER_PREFIX) else None

    def get(self, name: str) -> Optional[str]:
        values = self._values
        if values is None:
            values = self._values = {}
            try:
                address, user_id = msgpack.unpackb(self._frame[len(CALLER_PREFIX):], max_str_len=1024,
                                                   max_bin_len=0, max_array_len=2, max_map_len=0)
            except Exception:  # a worker's router wrote it: never, but nothing is trusted blindly
                return None
            values["Peer-Address"] = address if isinstance(address, str) else None
            values["User-Id"] = user_id if isinstance(user_id, str) else None
        return values.get(name)


class WorkerLoad:
    """One worker slot as the router counts it; the slot outlives the processes that fill it."""

    __slots__ = ("index", "in_flight", "served", "ready", "picked", "last_heard", "silent", "probed",
                 "__weakref__")

    def __init__(self, index: int) -> None:
        self.index = index
        #: Calls sent to it that have not ended yet.
        self.in_flight = 0
        #: Calls it ended (OK, ERR, STREAM_DONE) since the router started.
        self.served = 0
        #: Connected: its process is up and listening.
        self.ready = False
        #: When it was last given a call (the router's count of calls then): ties go to the oldest.
        self.picked = 0
        #: When it last sent anything, or got work while idle (the router's clock).
        self.last_heard = 0.0
        #: Busy yet silent for SILENT_INTERVALS: no new call until it speaks.
        self.silent = False
        #: When the router last pinged it (while silent).
        self.probed = float("-inf")


class _Route:
    __slots__ = ("worker", "last", "envelope")

    def __init__(self, worker: WorkerLoad, now: float, envelope: List[Any]) -> None:
        self.worker = worker
        self.last = now
        self.envelope = envelope  # to answer the caller if its worker dies


class ChannelRouter(Stopping):
    """The channel table of a router over ``workers`` slots, and the calls in flight of each.

    ``heartbeat`` (seconds, or None) is the servers' interval: it sets when
    a silent channel is forgotten (never without heartbeats: then only a
    reply ends a channel).
    """

    def __init__(self, workers: int, heartbeat: Optional[float]) -> None:
        if workers < 1:
            raise ValueError("a router needs at least one worker")
        self.workers = [WorkerLoad(i) for i in range(workers)]
        self.idle_after = IDLE_INTERVALS * heartbeat if heartbeat else None
        self.heartbeat = heartbeat if heartbeat else None
        self._routes: Dict[Tuple[Hashable, Any], _Route] = {}
        self._reader = HeaderReader()
        self._picks = 0
        self._ids = protocol.message_ids()

    @property
    def channels(self) -> int:
        """Channels open now (calls in flight, all workers)."""
        return len(self._routes)

    # -- events -------------------------------------------------------------------
    def from_client(self, peer: Hashable, envelope: List[Any], payload: Any, now: float,
                    revoked: Optional[Callable[[], bool]] = None) -> Tuple[str, Any]:
        """An event from a client: ``(FORWARD, worker)``, ``(DROP, None)``, ``(SEND, payload)``
        (an answer of the router's own, on ``envelope``) or ``(STATUS, message_id)``.

        ``peer`` identifies the client's connection (its envelope, hashable).
        ``revoked()``, asked only for a new call, says the client's key was
        admitted once but no longer is: the call is answered ``ERR
        AuthenticationFailed`` here, as a lone server answers it.
        """
        head = self._reader.read(payload)
        if head is None:
            if self.stopping:
                return _DROP
            # Unreadable: any worker answers it (or logs it) exactly as a lone server would.
            return (FORWARD, self._least_loaded())
        message_id, response_to, name = head
        if response_to is not None:
            key = (peer, response_to)
            route = self._routes.get(key)
            if route is None:
                return _DROP  # a channel that ended, expired, or whose worker died
            route.last = now
            if name == protocol.CANCEL:  # the worker answers a cancel with nothing: the channel ends here
                del self._routes[key]
                route.worker.in_flight -= 1
            return (FORWARD, route.worker)
        key = (peer, message_id)
        route = self._routes.get(key)
        if route is not None:  # a duplicate id: its worker logs it, as a lone server would
            route.last = now
            return (FORWARD, route.worker)
        if revoked is not None and name not in protocol.CONTROL_EVENTS and revoked():
            return (SEND, self.answer(envelope, message_id, protocol.ERR, protocol.error_args(
                "AuthenticationFailed", "this client's key is no longer admitted by the server", "")))
        if name == STATUS_METHOD:
            return (STATUS, message_id)
        if self.stopping:
            self._last_refusal = now
            return (SEND, self.answer(envelope, message_id, protocol.ERR, protocol.error_args(*STOPPING_REPLY, "")))
        if name in protocol.CONTROL_EVENTS:
            return _DROP  # a heartbeat or credit outside any channel: nothing to open
        worker = self._least_loaded()
        self._routes[key] = _Route(worker, now, envelope)
        if not worker.in_flight:
            worker.last_heard = now  # an idle worker owes nothing: its silence counts from now
        worker.in_flight += 1
        return (FORWARD, worker)

    def from_worker(self, worker: WorkerLoad, peer: Hashable, payload: Any, now: float) -> None:
        """An event from ``worker`` to client ``peer`` (the driver forwards it whatever it is)."""
        worker.last_heard = now
        if worker.silent:
            worker.silent = False
            log.info("worker %d speaks again: it takes new calls", worker.index)
        head = self._reader.read(payload)
        if head is None or head[1] is None:
            return
        key = (peer, head[1])
        if head[2] in ENDS:
            route = self._routes.get(key)
            if route is not None and route.worker is worker:
                del self._routes[key]
                worker.in_flight -= 1
                worker.served += 1
        else:
            route = self._routes.get(key)
            if route is not None:
                route.last = now

    def undeliverable(self, peer: Hashable, envelope: List[Any], payload: Any) -> Optional[List[Any]]:
        """The event from client ``peer`` that :meth:`from_client` forwarded could not be queued (the
        worker's queue is full): if it opened a call, forget it and return the ``ERR ServerBusy`` for
        the caller; else None (a lost heartbeat or credit: the heartbeats tell)."""
        head = self._reader.read(payload)
        if head is None or head[1] is not None:
            return None
        route = self._routes.pop((peer, head[0]), None)
        if route is None:
            return None
        route.worker.in_flight -= 1
        return self.answer(envelope, head[0], protocol.ERR, protocol.error_args(
            "ServerBusy", f"worker {route.worker.index} takes no more calls now (its queue is full)", ""))

    def answer(self, envelope: List[Any], message_id: Any, name: str, args: Any) -> List[Any]:
        """The frames of the router's own reply ``name`` to request ``message_id``."""
        header = protocol.reply_header(next(self._ids), message_id)
        return [*envelope, protocol.encode(header, name, args)]

    # -- workers and time -------------------------------------------------------------
    def _least_loaded(self) -> WorkerLoad:
        best: Optional[WorkerLoad] = None
        for worker in self.workers:
            if best is None or (worker.ready, not worker.silent, -worker.in_flight, -worker.picked) > (
                    best.ready, not best.silent, -best.in_flight, -best.picked):
                best = worker
        assert best is not None
        self._picks += 1
        best.picked = self._picks
        return best

    def worker_lost(self, worker: WorkerLoad, why: str) -> List[List[Any]]:
        """``worker``'s process is gone: forget its channels; return the ERR LostRemote for each caller.

        ``why`` (how it died) goes into the message.
        """
        doomed = [(key, route) for key, route in self._routes.items() if route.worker is worker]
        answers = []
        message = f"the server process serving this call {why}; the call may or may not have run"
        for key, route in doomed:
            del self._routes[key]
            answers.append(self.answer(route.envelope, key[1], protocol.ERR,
                                       protocol.error_args("LostRemote", message, "")))
        worker.in_flight = 0
        worker.ready = False
        worker.silent = False  # the next process starts with a clean slate
        return answers

    def sweep(self, now: float) -> int:
        """Forget the channels silent both ways for IDLE_INTERVALS heartbeats, and mark the workers
        silent for SILENT_INTERVALS with calls in flight; return how many channels were forgotten."""
        if self.idle_after is None:
            return 0
        silent_since = now - SILENT_INTERVALS * self.heartbeat  # type: ignore[operator]
        for worker in self.workers:
            if worker.in_flight and not worker.silent and worker.ready and worker.last_heard < silent_since:
                worker.silent = True
                log.warning("worker %d has sent nothing for %gs with %d call(s) in flight (frozen?): "
                            "no new calls go to it until it answers", worker.index, now - worker.last_heard,
                            worker.in_flight)
        limit = now - self.idle_after
        stale = [(key, route) for key, route in self._routes.items() if route.last < limit]
        for key, route in stale:
            del self._routes[key]
            route.worker.in_flight -= 1
        if stale:
            log.debug("forgot %d silent channel(s)", len(stale))
        return len(stale)

    def probes(self, now: float) -> List[Tuple[WorkerLoad, List[Any]]]:
        """Pings due to silent workers (once per heartbeat interval each): ``(worker, frames)`` to send it."""
        due = []
        if self.heartbeat is None:
            return due
        for worker in self.workers:
            if worker.silent and now - worker.probed >= self.heartbeat:
                worker.probed = now
                payload = protocol.encode(protocol.new_header(next(self._ids)), "_zerorpc_ping", [])
                due.append((worker, [PROBE_PEER, b"", payload]))
        return due

    def status(self) -> Dict[str, Any]:
        """What the router counts: calls in flight and served, per worker and in all."""
        return {
            "stopping": self.stopping,
            "in_flight": sum(w.in_flight for w in self.workers),
            "served": sum(w.served for w in self.workers),
            "workers": [{"worker": w.index, "ready": w.ready, "in_flight": w.in_flight, "served": w.served,
                         "silent": w.silent} for w in self.workers],
        }

