"""Serve on every core: N worker processes behind one endpoint, and the router in front of them.

    workers = zrpc.Workers("myapp.service:Service", workers="auto")
    workers.bind("tcp://0.0.0.0:4242")
    workers.run()            # until workers.stop() (e.g. from a signal handler)

The supervising process binds the user's endpoint with a ROUTER (the
server's security applies there: CURVE, ZAP, IP rules) and starts N fresh
processes, each a plain ``zrpc serve`` of the same target bound to an ipc
endpoint in a private temporary directory. One DEALER per worker carries
the calls to it. Which event goes where is decided by
:class:`zrpc.core.routing.ChannelRouter` (a channel's events all reach the
worker that took its call; new calls go to the one with the fewest in
flight); this module only reads and writes the sockets, in one plain
blocking ``zmq.Poller`` loop (no gevent: the router must not share its
core with anything else), and looks after the processes: a worker that
dies is restarted (backing off if it keeps dying), and :meth:`Workers.stop`
drains every worker the way ``zrpc serve`` drains one.

Workers are fresh interpreters, not forks: nothing of the supervisor
(sockets, greenlets, threads) leaks into them, and the served object is
built in each worker by importing its target, so it must be importable
there (from the current directory or PYTHONPATH).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import zmq
from zmq.utils.monitor import parse_monitor_message

from .core import protocol
from .core.intercept import frame_property
from .core.routing import (CALLER_PREFIX, FORWARD, PROBE_PEER, SEND, STATUS, ChannelRouter, WorkerLoad,
                           caller_frame)
from .security import ServerGuard, ZapHandler
from .sockets import HWM

__all__ = ["Workers", "WorkersFailed", "worker_count"]

log = logging.getLogger("zrpc.workers")

# Plain ints and one recv/send per frame: pyzmq's multipart helpers spend more on enum flags than on sending.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: Children, stop deadlines and silent channels are looked at this often (s).
_TICK = 0.1
#: Messages read from one socket per wake-up before the others get a turn.
_BATCH = 256
#: A worker that dies before serving, or within this many seconds of it, is restarted after a growing delay...
_QUICK_DEATH = 1.0
#: ...from this one, doubling, up to the last.
_BACKOFF = (0.1, 5.0)
#: Seconds a worker gets to exit after it was told to cancel its calls, before SIGKILL.
_KILL_AFTER = 5.0
#: Seconds the router's last replies get to leave when it closes.
_LINGER = 2.0
_PR_SET_PDEATHSIG = 1
#: Caller frames kept (one per client connection) before the cache starts again.
_CALLERS = 10_000
#: The caller frame of the router's own pings.
_NOBODY = caller_frame(None, None)
_HANDSHAKE_OK = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)


class WorkersFailed(RuntimeError):
    """The workers could not be started (the first one exited before serving: see its stderr)."""


def worker_count(value: Union[int, str]) -> int:
    """How many workers ``value`` asks for: ``"auto"`` is one per core this process may run on."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError(f"workers must be at least 1 or 'auto', got {value!r}")
    return count


class _PollZap(ZapHandler):
    """ZAP for the router's endpoint, answered from the router's own poll loop."""

    _handlers: Dict[int, ZapHandler] = {}

    @property
    def socket(self) -> zmq.Socket:
        return self._sock


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child, before exec: SIGTERM (a drain) if the supervisor dies, so no worker is orphaned."""
    def arm() -> None:
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the supervisor died before the line above: nobody would tell us
            os._exit(1)
    return arm


def _private_dir() -> str:
    """A new 0700 directory for the workers' ipc endpoints, with paths short enough for ipc.

    A Unix socket path is at most 107 bytes; a long $TMPDIR would make every
    worker endpoint unusable, so /tmp is used instead of one over 60.
    """
    base = tempfile.gettempdir()
    return tempfile.mkdtemp(prefix="zrpc-workers-", dir=base if len(base) <= 60 else "/tmp")


def _recv(sock: zmq.Socket) -> List[zmq.Frame]:
    """One whole message, as zmq Frames (no copy); raises zmq.Again if none is queued."""
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:  # the rest of a message is there as soon as its first frame is
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def _messages(sock: zmq.Socket) -> Iterator[List[zmq.Frame]]:
    """The messages queued on ``sock`` now, at most _BATCH, for a socket the poller says is readable.

    Asks ZMQ_EVENTS whether there is more rather than reading until zmq.Again: a
    raised Again costs ~9 us in pyzmq, three times the question.
    """
    for _ in range(_BATCH):
        try:
            frames = _recv(sock)
        except zmq.Again:  # only when called without the poller's word (a last drain)
            return
        if len(frames) >= 2:  # else: no envelope to answer on; a lone server would drop it too
            yield frames
        if not sock.getsockopt(_EVENTS) & _POLLIN:
            return


def _send(sock: zmq.Socket, frames: List[Any]) -> None:
    """Send one message without blocking; raises zmq.Again if the peer's queue is full (nothing sent)."""
    send = sock.send
    for frame in frames[:-1]:  # only the first frame can block: zmq queues a message whole or not at all
        send(frame, _SNDMORE_NOBLOCK, copy=False)
    send(frames[-1], _NOBLOCK, copy=False)


class _Slot:
    """One worker slot: its current process, the DEALER to it, and its restart history."""

    def __init__(self, load: WorkerLoad) -> None:
        self.load = load
        self.proc: Optional[subprocess.Popen] = None
        self.sock: Optional[zmq.Socket] = None
        self.monitor: Optional[zmq.Socket] = None
        self.endpoint = ""
        self.generation = 0
        self.restarts = 0
        self.delay = 0.0
        self.start_at: Optional[float] = 0.0  # when to start the next process; None: never
        self.cancelled = False  # told to cancel its calls (a second signal)
        self.ready_at: Optional[float] = None  # when its current process first connected


class Workers:
    """Serve ``target`` ("MODULE[:OBJECT]", as ``zrpc serve`` takes it) with ``workers`` processes.

    ``workers`` is a number or ``"auto"`` (one per core). Each worker is
    ``zrpc serve`` with ``name``, ``heartbeat``, ``pool_size`` (per worker)
    and ``grace``, plus ``serve_options`` (more ``zrpc serve`` options, e.g.
    ``["-v"]``), run by ``python``. Security (``curve_secret_key``,
    ``curve_clients``, ``allow_ips``, ``deny_ips``: as for :class:`zrpc.Server`)
    applies to the endpoints bound or connected here. With ``metrics``, each
    worker counts its calls for :class:`zrpc.metrics.WorkersMetrics` (which
    needs the ``metrics`` extra; this module never imports it). Workers only listen on
    a private ipc directory. Inside a worker's method, ``zrpc.current_call()``
    gives the client's ``peer_address`` and ``user_id`` as a single server
    would: the router, which holds the clients' connections, passes them on
    with every event. Not thread safe, except :meth:`stop`.
    """

    def __init__(
        self,
        target: str,
        workers: Union[int, str] = "auto",
        *,
        name: Optional[str] = None,
        heartbeat: Optional[float] = 5.0,
        pool_size: Optional[int] = None,
        grace: Optional[float] = 10.0,
        curve_secret_key: Any = None,
        curve_clients: Any = None,
        allow_ips: Optional[Iterable[str]] = None,
        deny_ips: Optional[Iterable[str]] = None,
        serve_options: Sequence[str] = (),
        python: str = sys.executable,
        metrics: bool = False,
    ) -> None:
        self.target = target
        self.count = worker_count(workers)
        self.heartbeat = heartbeat if heartbeat and heartbeat > 0 else None
        self.grace = grace
        self._router = ChannelRouter(self.count, self.heartbeat)
        self._context = zmq.Context()
        self._guard = ServerGuard.create(_PollZap, self._context, curve_secret_key, curve_clients,
                                         allow_ips, deny_ips)
        self._front = self._context.socket(zmq.ROUTER)
        self._front.linger = 0
        self._front.setsockopt(zmq.ROUTER_MANDATORY, 1)  # EHOSTUNREACH for a gone client, not a silent drop
        self._front.setsockopt(zmq.SNDHWM, HWM)
        self._front.setsockopt(zmq.RCVHWM, HWM)
        if self._guard is not None:
            self._guard.setup(self._front)
        self._dir = _private_dir()  # mode 0700: only this user reaches the workers
        #: Where each worker writes its metrics snapshot (``metrics=True``), else None.
        self.metrics_dir: Optional[str] = None
        if metrics:
            self.metrics_dir = os.path.join(self._dir, "metrics")
            os.mkdir(self.metrics_dir, 0o700)
            serve_options = [*serve_options, "--metrics-dir", self.metrics_dir]
        self._command = [python, "-m", "zrpc", "serve", "--behind-router", "--heartbeat", f"{self.heartbeat or 0:g}",
                         "--grace", f"{1e9 if grace is None else grace:g}",
                         *(["--name", name] if name else []),
                         *(["--pool-size", str(pool_size)] if pool_size else []), *serve_options]
        self._slots = [_Slot(load) for load in self._router.workers]
        self._endpoints: List[str] = []
        self._bound: List[str] = []
        self._handlers: Dict[zmq.Socket, Callable[[], None]] = {}
        self._poller = zmq.Poller()
        self._watch(self._front, self._from_clients)
        if self._guard is not None:
            zap = _PollZap._handlers[id(self._context)]
            self._watch(zap.socket, zap.answer_pending)  # type: ignore[attr-defined]
        self._stop_at: Optional[float] = None  # when calls still in flight get cancelled (inf: never)
        self._drain_started = 0.0
        self._ever_ready = False
        self._dropped = 0
        self._callers: Dict[bytes, bytes] = {}  # client connection -> its caller frame
        self._closed = False

    # -- endpoints -----------------------------------------------------------------
    def bind(self, endpoint: str) -> str:
        """Listen on ``endpoint`` for clients; returns the endpoint bound (``tcp://127.0.0.1:*`` picks a port)."""
        self._front.bind(endpoint)
        bound = self._front.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._endpoints.append(bound)
        self._bound.append(bound)
        return bound

    def connect(self, endpoint: str) -> str:
        """Connect to a client that binds (the reverse direction, as ``zrpc serve --connect``)."""
        self._front.connect(endpoint)
        self._endpoints.append(endpoint)
        return endpoint

    @property
    def endpoints(self) -> List[str]:
        """The endpoints bound or connected for clients."""
        return list(self._endpoints)

    # -- life cycle ----------------------------------------------------------------
    def run(self) -> None:
        """Start the workers and route calls to them until :meth:`stop` has drained them all.

        Raises :class:`WorkersFailed` if the first worker exits before it
        serves (its target does not import, for instance); the rest start
        once the first one serves.
        """
        if self._closed:
            raise RuntimeError("these workers are closed; make new ones")
        if not self._endpoints:
            raise RuntimeError("nothing to serve on: bind() or connect() first")
        for slot in self._slots:
            self._new_socket(slot)
        poller, handlers = self._poller, self._handlers
        next_tick = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_tick:
                    if self._tick(now):
                        return
                    next_tick = now + _TICK
                for sock, _ in poller.poll(max(next_tick - now, 0.0) * 1000):
                    handlers[sock]()
        finally:
            self._end_processes()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop taking new calls (they get ``ServerStopping`` from the router) and drain the workers.

        Calls in flight have ``timeout`` seconds (default: ``grace``; None
        for both: no limit) to finish, then they are cancelled; calling
        again with a shorter timeout (0: now) shortens it. Returns at once;
        :meth:`run` returns when every worker has exited. Safe from a signal
        handler or another thread.
        """
        if timeout is None:
            timeout = self.grace
        deadline = time.monotonic() + (math.inf if timeout is None else timeout)
        if self._stop_at is None or deadline < self._stop_at:
            self._stop_at = deadline

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def close(self) -> None:
        """Kill any worker left, release the sockets (flushing the last replies, bounded) and the directory."""
        if self._closed:
            return
        self._closed = True
        self._end_processes()
        if self._guard is not None:
            self._guard.close()
        for slot in self._slots:
            self._drop_socket(slot)
        self._front.close(linger=int(_LINGER * 1000))
        self._context.destroy(linger=0)  # any socket left open (a failed start) must not block the exit
        for endpoint in self._bound:
            if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
                try:
                    os.unlink(endpoint[len("ipc://"):])  # libzmq leaves the file; a stale one misleads the next bind
                except OSError:
                    pass
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def status(self) -> Dict[str, Any]:
        """What ``zrpc status`` shows: per worker its pid, restarts, calls in flight and served."""
        status = self._router.status()
        for entry, slot in zip(status["workers"], self._slots):
            proc = slot.proc  # once: a scrape thread may ask while the loop reaps
            entry["pid"] = proc.pid if proc is not None and proc.returncode is None else None
            entry["restarts"] = slot.restarts
        status.update(target=self.target, pid=os.getpid(), endpoints=self.endpoints)
        return status

    # -- the sockets -----------------------------------------------------------------
    def _watch(self, sock: zmq.Socket, handler: Callable[[], None]) -> None:
        self._poller.register(sock, zmq.POLLIN)
        self._handlers[sock] = handler

    def _unwatch(self, sock: zmq.Socket) -> None:
        self._poller.unregister(sock)
        del self._handlers[sock]

    def _new_socket(self, slot: _Slot) -> None:
        """A DEALER to the slot's next process, on an endpoint of its own (queues until it listens)."""
        slot.generation += 1
        slot.endpoint = f"ipc://{self._dir}/w{slot.load.index}-{slot.generation}"
        sock = self._context.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        slot.monitor = sock.get_monitor_socket(_HANDSHAKE_OK | _DISCONNECTED)
        slot.sock = sock  # before connect(), which may raise: close() must find it
        self._watch(sock, lambda: self._from_worker(slot))
        self._watch(slot.monitor, lambda: self._on_monitor(slot))
        sock.connect(slot.endpoint)

    def _drop_socket(self, slot: _Slot) -> None:
        sock, monitor, slot.sock, slot.monitor = slot.sock, slot.monitor, None, None
        if sock is None:
            return
        self._unwatch(sock)
        self._unwatch(monitor)  # type: ignore[arg-type]
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)  # type: ignore[union-attr]
        sock.close(linger=0)
        path = slot.endpoint[len("ipc://"):]
        try:
            os.unlink(path)  # the dead worker's socket file
        except OSError:
            pass

    def _from_clients(self) -> None:
        front, router, slots, callers = self._front, self._router, self._slots, self._callers
        from_client = router.from_client
        guard = self._guard
        revocable = guard is not None and guard.clients is not None and guard.clients.directory is not None
        now = time.monotonic()
        for frames in _messages(front):
            envelope = frames[:-1]
            identity = frames[0].bytes
            peer = identity if len(frames) == 3 else tuple(f.bytes for f in envelope)
            if revocable:  # keys deleted from the --curve-clients directory: refuse their next calls
                last = frames[-1]
                kind, value = from_client(peer, envelope, last.buffer, now, lambda: guard.revoked(last))
            else:
                kind, value = from_client(peer, envelope, frames[-1].buffer, now)
            if kind is FORWARD:
                # An id libzmq made (first byte 0) is never reused on this socket: its caller frame is
                # kept. An id a client chose may come back on another connection: read it afresh.
                caller = callers.get(identity) if identity[:1] == b"\0" else None
                if caller is None:
                    caller = self._caller_of(identity, frames[-1])
                try:
                    _send(slots[value.index].sock, [frames[0], caller, *frames[1:]])  # type: ignore[arg-type]
                except zmq.Again:
                    self._lost_message(f"worker {value.index} takes no more (its queue is full)")
                    busy = router.undeliverable(peer, envelope, frames[-1].buffer)
                    if busy is not None:
                        self._to_client(busy)
            elif kind is SEND:
                self._to_client(value)
            elif kind is STATUS:
                self._to_client(router.answer(envelope, value, protocol.OK, [self.status()]))

    def _from_worker(self, slot: _Slot) -> None:
        sock, load = slot.sock, slot.load
        if sock is None:
            return
        from_worker = self._router.from_worker
        now = time.monotonic()
        for frames in _messages(sock):
            if len(frames) < 3 or not frames[1].bytes.startswith(CALLER_PREFIX):
                continue  # not an answer on an envelope of ours: nobody to give it to
            del frames[1]  # the caller frame is for the worker only
            peer = frames[0].bytes if len(frames) == 3 else tuple(f.bytes for f in frames[:-1])
            from_worker(load, peer, frames[-1].buffer, now)
            if peer != PROBE_PEER:  # the answer to a ping of the router's own stops here
                self._to_client(frames)

    def _caller_of(self, identity: bytes, frame: zmq.Frame) -> bytes:
        """The caller frame for the client on connection ``identity``, from the metadata of its ``frame``."""
        caller = caller_frame(frame_property(frame, "Peer-Address"), frame_property(frame, "User-Id"))
        if identity[:1] == b"\0":
            if len(self._callers) >= _CALLERS:
                self._callers.clear()  # connections come and go; any entry is rebuilt from the next frame
            self._callers[identity] = caller
        return caller

    def _to_client(self, frames: List[Any]) -> None:
        try:
            _send(self._front, frames)
        except zmq.Again:
            self._lost_message("a client takes no more (its queue is full)")
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            # The client disconnected: nobody to tell.

    def _lost_message(self, why: str) -> None:
        self._dropped += 1
        if self._dropped & (self._dropped - 1) == 0:  # 1st, 2nd, 4th, 8th...: a flood logs a few lines
            log.warning("dropped a message: %s (%d dropped so far)", why, self._dropped)

    def _on_monitor(self, slot: _Slot) -> None:
        monitor = slot.monitor
        while monitor is not None:
            try:
                event = parse_monitor_message(monitor.recv_multipart(_NOBLOCK))["event"]
            except zmq.Again:
                return
            if event == _HANDSHAKE_OK:
                slot.load.ready = True
                if slot.ready_at is None:
                    slot.ready_at = time.monotonic()
                if not self._ever_ready:
                    self._ever_ready = True
                    log.info("worker 0 serves; starting the other %d", self.count - 1)
            elif event == _DISCONNECTED:
                slot.load.ready = False

    # -- the processes ------------------------------------------------------------------
    def _tick(self, now: float) -> bool:
        """Look after the processes and the channel table; True once everything has stopped."""
        router = self._router
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                self._reap(slot, now)
        if self._stop_at is not None and not router.stopping:
            router.stop(now)
            self._drain_started = now
            for slot in self._slots:
                slot.start_at = None
                self._signal(slot, signal.SIGTERM)  # each worker drains as zrpc serve does
        if router.stopping:
            return self._draining(now)
        for slot in self._slots:
            if slot.proc is None and slot.start_at is not None and now >= slot.start_at and (
                    self._ever_ready or slot.load.index == 0):
                self._spawn(slot)
        router.sweep(now)
        for load, frames in router.probes(now):  # a ping to each silent worker: does it answer?
            sock = self._slots[load.index].sock
            if sock is not None:
                try:
                    _send(sock, [frames[0], _NOBODY, *frames[1:]])
                except zmq.Again:
                    pass  # its queue is full: it is not reading, the next probe will tell
        return False

    def _draining(self, now: float) -> bool:
        assert self._stop_at is not None
        alive = [slot for slot in self._slots if slot.proc is not None]
        if not alive:
            return not self._router.refusing_for(now)  # a moment more of ServerStopping, like one server
        # Each worker cancels its calls by itself at its own --grace; only a shorter stop()
        # tells it sooner, with a second signal (as a second Ctrl-C does to zrpc serve).
        own = self._drain_started + (math.inf if self.grace is None else self.grace)
        cancel_at = min(self._stop_at, own)
        for slot in alive:
            if not slot.cancelled and now >= cancel_at:
                slot.cancelled = True
                if self._stop_at < own - _TICK:
                    # SIGINT, not a second SIGTERM: sent right after the first (stop(0)), two
                    # SIGTERMs would merge into one; the worker treats either as "cancel now".
                    self._signal(slot, signal.SIGINT)
            elif slot.cancelled and now >= cancel_at + _KILL_AFTER:
                log.warning("worker %d (pid %d) did not exit %gs after cancelling its calls; killing it",
                            slot.load.index, slot.proc.pid, _KILL_AFTER)  # type: ignore[union-attr]
                self._signal(slot, signal.SIGKILL)
        return False

    def _spawn(self, slot: _Slot) -> None:
        command = [*self._command, "--bind", slot.endpoint, self.target]
        slot.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent(os.getpid()))
        slot.ready_at = None
        slot.cancelled = False
        log.info("worker %d started (pid %d)", slot.load.index, slot.proc.pid)

    def _reap(self, slot: _Slot, now: float) -> None:
        proc = slot.proc
        assert proc is not None
        self._from_worker(slot)  # replies it sent before it went still count
        slot.proc = None
        how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited with status {proc.returncode}")
        answers = self._router.worker_lost(slot.load, f"(pid {proc.pid}) {how}")
        for frames in answers:
            self._to_client(frames)
        lost = len(answers)
        if self._router.stopping:
            log.info("worker %d (pid %d) %s", slot.load.index, proc.pid, how)
            return
        if not self._ever_ready:
            raise WorkersFailed(f"worker {slot.load.index} {how} before serving {self.target}")
        # A quick death: it never served, or died within _QUICK_DEATH of serving (a slow start
        # that always fails must back off too, however long its start takes).
        quick = slot.ready_at is None or now - slot.ready_at < _QUICK_DEATH
        slot.delay = min(max(slot.delay * 2, _BACKOFF[0]), _BACKOFF[1]) if quick else 0.0
        slot.start_at = now + slot.delay
        slot.restarts += 1
        log.warning("worker %d (pid %d) %s; %d call(s) in flight on it are lost; restarting it%s",
                    slot.load.index, proc.pid, how, lost, f" in {slot.delay:g}s" if slot.delay else "")
        self._drop_socket(slot)
        self._new_socket(slot)

    def _signal(self, slot: _Slot, signum: int) -> None:
        if slot.proc is not None and slot.proc.returncode is None:
            try:
                slot.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def _end_processes(self) -> None:
        """Kill and reap every worker still running (run() ended early, or close())."""
        for slot in self._slots:
            proc = slot.proc
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not die", slot.load.index, proc.pid)
            slot.proc = None
