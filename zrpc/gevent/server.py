"""The gevent server: a ROUTER socket whose calls each run in their own greenlet.

What an incoming message means (start, queue, credit, cancel, refuse) is
decided by :class:`zrpc.core.server_session.ServerSession`; this module
only performs it: greenlets for calls (reused when idle), waiting for
credit, interrupting a cancelled call, and clean shutdown.
"""
from __future__ import annotations

import logging
import time
import types
from typing import Any, Iterable, List, Mapping, Optional

import gevent
import zmq
from gevent.event import Event
from gevent.hub import Waiter

from ..core import protocol
from ..core.errors import ClosedError
from ..core.protocol import printable
from ..core.methods import MethodTable
from ..core.server_session import (
    CANCEL,
    CREDIT,
    QUEUED,
    SEND,
    SERVER_STOPPED,
    START,
    Cancellation,
    ServerCall,
    ServerSession,
)
from ..core.intercept import _CURRENT, Interceptor
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..nodes import ServerBase
from .node import Node
from ..security import ServerGuard
from .security import ZapDriver
from .transport import PeerUnreachable

__all__ = ["Server"]

log = logging.getLogger("zrpc.server")

# Idle call greenlets kept for reuse: resuming one costs ~1 us, spawning ~11 us
# (a fresh 16 KiB stack mapping each time). Bounded so a burst does not pin memory.
_MAX_IDLE_WORKERS = 256
#: Calls that may wait for room in the pool by default; more are refused with ServerBusy.
DEFAULT_MAX_PENDING = 100_000
# ERRs sent outside any call that the socket could not take at once wait for room
# this long, in a greenlet of their own, before they are dropped with a log line.
_REJECT_WAIT = 5.0
_MAX_PENDING_REJECTS = 1024


class _Cancelled(gevent.GreenletExit):
    """Raised inside a call's greenlet to stop it."""

    def __init__(self, why: Cancellation) -> None:
        super().__init__(why.reason)
        self.why = why


class Server(ServerBase, Node):
    """Serve the public callables of ``methods`` (an object, a module or a dict) over zerorpc v3.

    ``heartbeat`` (seconds, None to disable) should match the clients'.
    ``pool_size`` bounds how many calls run at once; extra calls wait in
    line, at most ``max_pending`` of them (None: no bound); a call beyond
    that is refused at once with a ``ServerBusy`` error. ``send_tracebacks=False`` keeps server tracebacks private.
    ``stream_generators=True`` streams any generator a method returns, not
    only methods marked ``@zrpc.stream``. ``socket_options`` ({zmq option:
    value}) are set on the socket before any bind or connect; ``trace(direction,
    header, name, args)`` is called for every event sent and received.
    Security (see the README's "Security" section): ``curve_secret_key``
    encrypts every endpoint with CURVE; ``curve_clients`` (public keys, or a
    directory of certificates re-read when it changes) limits which clients
    may connect; ``allow_ips``/``deny_ips`` (addresses or CIDR networks)
    apply with or without CURVE. Inside a method, ``zrpc.current_call()``
    tells who is calling, with the headers and deadline of the call.
    ``interceptors`` wrap every call: ``interceptor(call, proceed)``, the
    first outermost (see the README's "Interceptors, deadlines and metrics").
    """

    def __init__(
        self,
        methods: Any = None,
        name: Optional[str] = None,
        *,
        heartbeat: Optional[float] = 5.0,
        pool_size: Optional[int] = None,
        max_pending: Optional[int] = DEFAULT_MAX_PENDING,
        send_tracebacks: bool = True,
        stream_generators: bool = False,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        context: Optional[zmq.Context] = None,
        socket_options: Optional[Mapping[int, Any]] = None,
        trace: Optional[Tracer] = None,
        curve_secret_key: Any = None,
        curve_clients: Any = None,
        allow_ips: Optional[Iterable[str]] = None,
        deny_ips: Optional[Iterable[str]] = None,
        interceptors: Iterable[Interceptor] = (),
    ) -> None:
        if methods is None:
            methods = self  # subclass style: class MyService(zrpc.Server)
        exclude = set(dir(Server)) if methods is self else None
        session = ServerSession(
            MethodTable(methods, name, exclude),
            heartbeat=heartbeat,
            pool_size=pool_size,
            max_pending=max_pending,
            send_tracebacks=send_tracebacks,
            stream_generators=stream_generators,
            max_message_size=max_message_size,
            trace=trace,
        )
        super().__init__(session, context, socket_options)
        self._session: ServerSession = session
        self._interceptors = list(interceptors)
        self._guard = ServerGuard.create(ZapDriver, self._context, curve_secret_key, curve_clients, allow_ips, deny_ips)
        if self._guard is not None:
            self._socket_setups.append(self._guard.setup)
        # One ROUTER for every endpoint: it routes each reply by the caller's identity.
        self._transport = self._new_transport()
        self._idle_workers: List[Waiter] = []
        self._pending_rejects = 0
        self._stopped = Event()
        self._idle = Event()
        self._idle.set()

    # -- public life cycle ----------------------------------------------------
    def start(self) -> "Server":
        """Serve in the background of the current gevent hub; returns at once."""
        if self._session.stopping:
            raise RuntimeError("a stopped server cannot be started again; make a new one")
        self._start_io()
        return self

    def run(self) -> None:
        """Serve until :meth:`stop` or :meth:`close` is called (from another greenlet or a signal)."""
        self.start()
        self._stopped.wait()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop taking new calls; let calls in flight finish for up to ``timeout`` seconds, then cancel them.

        New calls arriving meanwhile get an ERR ``ServerStopping``, so their
        callers fail fast instead of timing out. ``timeout=None`` waits for
        every call in flight.
        """
        # Endpoints stay bound until close(): unbinding would also drop the
        # connections that calls in flight must answer on.
        self._session.stopping = True
        if not self._idle.wait(timeout):
            for call in self._session.open_calls():
                self._cancel(call, SERVER_STOPPED)
            self._idle.wait(1.0)
        self._stopped.set()

    def close(self) -> None:
        """Cancel calls in flight and release every socket, flushing replies already queued (bounded)."""
        if self.closed:
            return
        self.stop(0)
        if self._guard is not None:
            self._guard.close()  # before the context is terminated: the ZAP socket lives on it
        self._close_io()
        idle, self._idle_workers = self._idle_workers, []
        loop = gevent.get_hub().loop
        for waiter in idle:
            loop.run_callback(waiter.switch, None)  # let parked workers exit

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- receiving ---------------------------------------------------------
    def _on_frames(self, frames: List[Any]) -> None:
        action = self._session.receive(frames, time.monotonic())
        if action is None:
            return
        kind = action[0]
        if kind is START or kind is QUEUED:
            if self._admit(action[1]) and kind is START:
                self._launch(action[1])
                self._idle.clear()
        elif kind is CREDIT:
            ready = action[1].credit_ready
            if ready is not None:
                ready.set()
        elif kind is CANCEL:
            self._cancel(action[1], action[2])
        elif kind is SEND:
            self._send_reject(action[1])

    def _launch(self, call: ServerCall) -> None:
        if self._idle_workers:
            waiter = self._idle_workers.pop()
            call.task = waiter.greenlet
            gevent.get_hub().loop.run_callback(waiter.switch, call)
        else:
            call.task = gevent.spawn(self._work, call)

    def _work(self, call: Optional[ServerCall]) -> None:
        """A call greenlet: serve this call, then park and serve more while the server lives."""
        while call is not None:
            self._serve(call)
            if self.closed or len(self._idle_workers) >= _MAX_IDLE_WORKERS:
                return
            waiter = Waiter()
            self._idle_workers.append(waiter)
            call = waiter.get()

    def _send_reject(self, frames: List[Any]) -> None:
        """Send an ERR outside any call without blocking the reader; if the socket is full, wait in a greenlet."""
        try:
            if self._transport.try_send(frames):
                return
        except (PeerUnreachable, ClosedError):
            return  # the caller is gone: nobody to tell
        if self._pending_rejects >= _MAX_PENDING_REJECTS:
            log.warning("dropped an ERR reply: %d already wait for a full socket", self._pending_rejects)
            return
        self._pending_rejects += 1
        gevent.spawn(self._send_reject_slowly, frames)

    def _send_reject_slowly(self, frames: List[Any]) -> None:
        try:
            self._transport.send(frames, time.monotonic() + _REJECT_WAIT, _REJECT_WAIT)
        except (PeerUnreachable, ClosedError):
            pass
        except Exception as exc:  # TimeoutExpired: the peer takes nothing
            log.warning("dropped an ERR reply: %s", exc)
        finally:
            self._pending_rejects -= 1

    # -- serving one call ------------------------------------------------------
    def _serve(self, call: ServerCall) -> None:
        session = self._session
        call.running = True
        _CURRENT.set(call)  # zrpc.current_call(): each greenlet has its own context
        outcome, error, result = "ok", None, None
        try:
            try:
                if call.cancelled is not None:
                    raise _Cancelled(call.cancelled)
                name, func, args, kwargs = session.methods.resolve(call.method, call.args)
                call.method, call.args = name, None
                if self._interceptors:
                    result = self._intercepted(call, name, args, kwargs, lambda a, k: func(*a, **k))
                else:
                    result = func(*args, **kwargs)
                if session.streams(func, isinstance(result, types.GeneratorType)):
                    if call.info is not None:
                        call.info.stream = True
                    self._stream(call, result)
                    result = None
                else:
                    self._reply(call, session.reply(call, protocol.OK, [result]))
            except _Cancelled as cancel:
                outcome, error = "cancelled", cancel
                payload = session.cancelled_reply(call, cancel.why)
                if payload is not None:
                    try:
                        self._reply(call, payload)
                    except (PeerUnreachable, ClosedError):
                        pass
            except (PeerUnreachable, ClosedError) as exc:
                outcome, error = "cancelled", exc
                log.info("call %s(): caller disconnected, result dropped", printable(call.method))
            except Exception as exc:
                outcome, error = "error", exc
                try:
                    self._reply(call, session.error_reply(call, exc))
                except (_Cancelled, PeerUnreachable, ClosedError):
                    pass
        finally:
            call.running = False  # from here on, no cancel may reach this greenlet
            call.connection = None
            _CURRENT.set(None)
            for ready in session.finished(call):
                self._launch(ready)
            if not session.running and not session.queued:
                self._idle.set()
            self._over(call, outcome, error, result)

    def _reply(self, call: ServerCall, payload: bytes) -> None:
        """Send one encoded reply, waiting for the caller's credit first."""
        while call.credit <= 0:
            if call.credit_ready is None:
                call.credit_ready = Event()
            call.credit_ready.clear()
            call.credit_ready.wait()
        call.credit -= 1
        call.reply_bytes += len(payload)
        self._send(call, payload)

    def _stream(self, call: ServerCall, iterable: Any) -> None:
        session = self._session
        iterator = iter(iterable)
        try:
            for item in iterator:
                # Encode first: a value msgpack refuses must not use up the caller's credit.
                self._reply(call, session.reply(call, protocol.STREAM, item))
                call.deadline = None  # a stream's items are paced by its reader, not by its deadline
            self._reply(call, session.reply(call, protocol.STREAM_DONE, None))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # runs the generator's finally now, not at garbage collection

    # -- cancel, heartbeat loss -----------------------------------------------
    def _cancel(self, call: ServerCall, why: Cancellation) -> None:
        interrupt, answer = self._session.cancel(call, why)
        if answer is not None:
            self._send_reject(answer[1])
        if call.waiting:  # a queued call: the server may be idle now
            if self._session.idle:
                self._idle.set()
        elif interrupt and call.task is not gevent.getcurrent():
            gevent.get_hub().loop.run_callback(self._interrupt, call, why)
        # a task spawned but not yet running sees call.cancelled when it starts

    @staticmethod
    def _interrupt(call: ServerCall, why: Cancellation) -> None:
        """Raise the cancellation in the call's greenlet, if it is still serving that call.

        Greenlets are reused, so the check happens here, in the hub, at the
        moment of delivery: a cancel can never reach the next call.
        """
        task = call.task
        if call.running and task is not None and not task.dead:
            task.throw(_Cancelled(why))

    def _on_lost(self, call: Any) -> None:
        self._cancel(call, self._session.lost(call))

    def _frames(self, channel: Any, payload: bytes) -> List[Any]:
        return [*channel.envelope, payload]

    def _transport_of(self, channel: Any) -> Any:
        return self._transport
