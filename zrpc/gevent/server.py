"""The gevent server: a ROUTER socket whose calls each run in their own greenlet.

What an incoming message means (start, queue, credit, cancel, refuse) is
decided by :class:`zrpc.core.server_session.ServerSession`; this module
only performs it: greenlets for calls (reused when idle), waiting for
credit, interrupting a cancelled call, and clean shutdown.
"""
from __future__ import annotations

import contextvars
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
from ..core.server_session import DEFAULT_MAX_PENDING, Cancellation, ServerCall
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..core.intercept import _CURRENT, Interceptor
from ..nodes import REJECT_WAIT, ServerBase
from .node import Node
from .security import ZapDriver
from .transport import PeerUnreachable

__all__ = ["Server"]

log = logging.getLogger("zrpc.server")

# Idle call greenlets kept for reuse: resuming one costs ~1 us, spawning ~11 us
# (a fresh 16 KiB stack mapping each time). Bounded so a burst does not pin memory.
_MAX_IDLE_WORKERS = 256


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

    _event_class = Event

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
        self._init_server(methods, name, exclude_from=Server, zap_driver=ZapDriver, heartbeat=heartbeat,
                          pool_size=pool_size, max_pending=max_pending, send_tracebacks=send_tracebacks,
                          stream_generators=stream_generators, max_message_size=max_message_size, trace=trace,
                          context=context, socket_options=socket_options, curve_secret_key=curve_secret_key,
                          curve_clients=curve_clients, allow_ips=allow_ips, deny_ips=deny_ips,
                          interceptors=interceptors)
        self._idle_workers: List[Waiter] = []

    # -- public life cycle ----------------------------------------------------
    def start(self) -> "Server":
        """Serve in the background of the current gevent hub; returns at once."""
        return super().start()

    def run(self) -> None:
        """Serve until :meth:`stop` or :meth:`close` is called (from another greenlet or a signal)."""
        self.start()
        self._stopped.wait()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop taking new calls; let calls in flight finish for up to ``timeout`` seconds, then cancel them.

        New calls arriving meanwhile get an ERR ``ServerStopping``, so their
        callers fail fast instead of timing out (or retry on another server).
        ``timeout=None`` waits for every call in flight. Before returning
        (unless ``timeout=0``) it keeps refusing until no call came for
        ``STOP_QUIET`` seconds (see ServerSession.refusing_for).
        Called by a method of this server, it returns at once and the rest
        (waiting, then ``run()`` returning) goes on in the background, until
        that call too is over and its reply sent.
        """
        # Endpoints stay bound until close(): unbinding would also drop the
        # connections that calls in flight must answer on.
        self._session.stop(time.monotonic())
        if self._stopped_from_inside():
            gevent.spawn(self._finish_stop, timeout)  # the calling call cannot wait for itself
        else:
            self._finish_stop(timeout)

    def _finish_stop(self, timeout: Optional[float]) -> None:
        """stop()'s waiting: for the calls in flight, then for the callers still sending."""
        session = self._session
        if not self._idle.wait(timeout):
            self._cancel_open_calls()
            self._idle.wait(1.0)
        while timeout != 0 and not self.closed:
            left = session.refusing_for(time.monotonic())
            if not left:
                break
            gevent.sleep(left)  # clients still sending get ServerStopping, not a closed socket
        self._stopped.set()

    def close(self) -> None:
        """Cancel calls in flight and release every socket, flushing replies already queued (bounded)."""
        if self.closed:
            return
        self._session.stop(time.monotonic())
        # Waited here even inside a call: the others' ServerStopped must go out before the socket closes.
        self._finish_stop(0)
        self._close_guard()
        self._close_io()
        idle, self._idle_workers = self._idle_workers, []
        loop = gevent.get_hub().loop
        for waiter in idle:
            loop.run_callback(waiter.switch, None)  # let parked workers exit

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the waiting behind zrpc.nodes.ServerBase ----------------------------
    def _launch(self, call: ServerCall) -> None:
        if self._idle_workers:
            waiter = self._idle_workers.pop()
            call.task = waiter.greenlet
            gevent.get_hub().loop.run_callback(waiter.switch, call)
        else:
            call.task = gevent.spawn(self._work, call)

    def _work(self, call: Optional[ServerCall]) -> None:
        """A call greenlet: serve this call, then park and serve more while the server lives.

        No per-call state reaches the next call: each call runs in a fresh
        ``contextvars.Context``, and a greenlet that gained an attribute
        during a call (what ``gevent.local`` and a patched ``threading.local``
        store there) is retired instead of reused.
        """
        attributes = len(gevent.getcurrent().__dict__)  # gevent keeps its own (``_run``) there
        while call is not None:
            contextvars.Context().run(self._serve, call)
            if (self.closed or len(self._idle_workers) >= _MAX_IDLE_WORKERS
                    or len(gevent.getcurrent().__dict__) != attributes):
                return
            waiter = Waiter()
            self._idle_workers.append(waiter)
            call = waiter.get()

    @staticmethod
    def _wake(waiter: Event) -> None:
        waiter.set()

    def _send_reject_later(self, frames: List[Any]) -> None:
        gevent.spawn(self._send_reject_slowly, frames)

    def _send_reject_slowly(self, frames: List[Any]) -> None:
        error = None
        try:
            self._transport.send(frames, time.monotonic() + REJECT_WAIT, REJECT_WAIT)
        except Exception as exc:
            error = exc
        finally:
            self._reject_sent(error)

    # -- serving one call ------------------------------------------------------
    def _serve(self, call: ServerCall) -> None:
        session = self._session
        call.running = True
        _CURRENT.set(call)  # zrpc.current_call(): each call has its own context (see _work)
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

    # -- cancel ---------------------------------------------------------------
    def _interrupt_call(self, call: ServerCall, why: Cancellation) -> None:
        if call.task is not gevent.getcurrent():
            gevent.get_hub().loop.run_callback(self._interrupt, call, why)

    @staticmethod
    def _interrupt(call: ServerCall, why: Cancellation) -> None:
        """Raise the cancellation in the call's greenlet, if it is still serving that call.

        Greenlets are reused, so the check happens here, in the hub, at the
        moment of delivery: a cancel can never reach the next call.
        """
        task = call.task
        if call.running and task is not None and not task.dead:
            task.throw(_Cancelled(why))
