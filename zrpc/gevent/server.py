"""The zrpc server: a ROUTER socket that runs each call in its own greenlet.

The server owns dispatch (method table, built-ins, keyword calls), the pool
that bounds calls running at once, streaming with credit, cancellation, and
clean shutdown. Every bad input is answered with an ERR when the caller can
be told, logged in one line, and never stops the server.
"""
from __future__ import annotations

import logging
import time
import traceback
import types
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple

import gevent
import zmq
from gevent.event import Event
from gevent.hub import Waiter

from ..core import methods as _methods
from ..core import protocol
from ..core.channel import Channel
from ..core.errors import ClosedError
from .node import DEFAULT_MAX_MESSAGE_SIZE, Node, Tracer
from .transport import PeerUnreachable, Transport

__all__ = ["Server"]

log = logging.getLogger("zrpc.server")

_MAX_CREDIT = 1 << 20
# Idle call greenlets kept for reuse: resuming one costs ~1 us, spawning ~11 us
# (a fresh 16 KiB stack mapping each time). Bounded so a burst does not pin memory.
_MAX_IDLE_WORKERS = 256


class _Cancelled(gevent.GreenletExit):
    """Raised inside a call's greenlet to stop it; ``reply`` is the ERR to send, if any."""

    def __init__(self, reason: str, reply: Optional[Tuple[str, str]] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


class _ServerCall(Channel):
    __slots__ = ("envelope", "method", "task", "running", "credit", "credit_ready", "cancelled")

    def __init__(self, key: Any, channel_id: Any, envelope: List[bytes], method: str, now: float) -> None:
        super().__init__(key, channel_id, key[0], now)
        self.envelope = envelope
        self.method = method
        self.task: Optional[gevent.Greenlet] = None
        self.running = False  # the task has begun (a greenlet killed before it starts never runs)
        self.credit = 1
        self.credit_ready: Optional[Event] = None
        self.cancelled: Optional[_Cancelled] = None


class Server(Node):
    """Serve the public callables of ``methods`` (an object, a module or a dict) over zerorpc v3.

    ``heartbeat`` (seconds, None to disable) should match the clients'.
    ``pool_size`` bounds how many calls run at once; extra calls wait in
    line. ``send_tracebacks=False`` keeps server tracebacks private.
    ``stream_generators=True`` streams any generator a method returns, not
    only methods marked ``@zrpc.stream``. ``socket_options`` ({zmq option:
    value}) are set on the socket before any bind or connect; ``trace(direction,
    header, name, args)`` is called for every event sent and received.
    """

    _socket_type = zmq.ROUTER

    def __init__(
        self,
        methods: Any = None,
        name: Optional[str] = None,
        *,
        heartbeat: Optional[float] = 5.0,
        pool_size: Optional[int] = None,
        send_tracebacks: bool = True,
        stream_generators: bool = False,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        context: Optional[zmq.Context] = None,
        socket_options: Optional[Mapping[int, Any]] = None,
        trace: Optional[Tracer] = None,
    ) -> None:
        if methods is None:
            methods = self  # subclass style: class MyService(zrpc.Server)
        if pool_size is not None and pool_size < 1:
            raise ValueError("pool_size must be at least 1 (or None for no limit)")
        super().__init__(heartbeat, context, max_message_size, socket_options, trace)
        # One ROUTER for every endpoint: it routes each reply by the caller's identity.
        self._transport = self._new_transport()
        self.name = name or _methods.service_name(methods)
        exclude = set(dir(Server)) if methods is self else None
        self._methods: Dict[str, Callable[..., Any]] = _methods.public_methods(methods, exclude)
        self._builtins: Dict[str, Callable[..., Any]] = {
            "_zerorpc_ping": lambda: ["pong", self.name],
            "_zerorpc_list": lambda: list(self._methods),
            "_zerorpc_name": lambda: self.name,
            "_zerorpc_help": lambda method: _methods.doc(self._lookup_public(method)),
            "_zerorpc_args": lambda method: _methods.argspec(self._lookup_public(method)),
            "_zerorpc_inspect": self._inspect,
        }
        self.pool_size = pool_size
        self.send_tracebacks = send_tracebacks
        self.stream_generators = stream_generators
        self._running = 0
        self._idle_workers: List[Waiter] = []
        self._streams: Dict[Callable[..., Any], bool] = {
            f: _methods.is_stream(f) for f in self._methods.values()
        }
        self._backlog: Deque[Tuple[_ServerCall, str, Any]] = deque()
        self._stopping = False
        self._stopped = Event()
        self._idle = Event()
        self._idle.set()

    # -- public life cycle ----------------------------------------------------
    def bind(self, endpoint: str) -> str:
        """Listen on ``endpoint`` (tcp://host:port, ipc://path); ``tcp://127.0.0.1:*`` picks a port.

        Returns the endpoint actually bound. May be called several times.
        """
        return self._transport.bind(endpoint)

    def connect(self, endpoint: str) -> str:
        """Connect to a client that binds (reverse direction); may be called several times."""
        return self._transport.connect(endpoint)

    def start(self) -> "Server":
        """Serve in the background of the current gevent hub; returns at once."""
        if self._stopping:
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
        self._stopping = True
        if not self._idle.wait(timeout):
            reason = _Cancelled("server stopped", ("ServerStopped", "the server stopped before the call finished"))
            for call in list(self._table):
                if isinstance(call, _ServerCall):
                    self._cancel(call, reason)
            self._idle.wait(1.0)
        self._stopped.set()

    def close(self) -> None:
        """Cancel calls in flight and release every socket at once."""
        if self.closed:
            return
        self.stop(0)
        self._close_io()
        idle, self._idle_workers = self._idle_workers, []
        loop = gevent.get_hub().loop
        for waiter in idle:
            loop.run_callback(waiter.switch, None)  # let parked workers exit

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def calls_in_flight(self) -> int:
        """Calls running or waiting in line."""
        return self._running + len(self._backlog)

    # -- receiving ---------------------------------------------------------
    def _on_frames(self, frames: List[bytes]) -> None:
        if len(frames) < 2:
            log.warning("dropped a message of %d frame(s): no routing envelope", len(frames))
            return
        envelope = frames[:-1]
        peer = frames[0] if len(frames) == 3 else tuple(envelope)
        try:
            header, name, args = protocol.decode(frames[-1], self.max_message_size)
        except protocol.ProtocolError as exc:
            header = exc.header
            log.warning("bad message from peer %s: %s", _peer_repr(peer), protocol.printable(str(exc), 300))
            if header is not None and header.get("response_to") is None:
                self._reject(envelope, header["message_id"], "ProtocolError", str(exc))
            return
        if self._trace is not None:
            self._trace("recv", header, name, args)
        response_to = header.get("response_to")
        if response_to is not None:
            call = self._table.get((peer, response_to))
            if call is None:
                log.debug("event %s for a closed channel from %s (ignored)", protocol.printable(name), _peer_repr(peer))
                return
            call.last_recv = time.monotonic()
            if name == protocol.MORE:
                self._grant(call, args)
            elif name == protocol.CANCEL:
                log.debug("call %s cancelled by its caller", protocol.printable(call.method))
                self._cancel(call, _Cancelled("cancelled by the caller"))
            elif name != protocol.HEARTBEAT:
                log.debug("unexpected event %s on an open channel (ignored)", protocol.printable(name))
            return
        self._accept(peer, envelope, header["message_id"], name, args)

    def _accept(self, peer: Any, envelope: List[bytes], message_id: Any, name: str, args: Any) -> None:
        if self._stopping:
            self._reject(envelope, message_id, "ServerStopping", "the server is shutting down; retry elsewhere")
            return
        if name in protocol.CONTROL_EVENTS:
            log.debug("control event %s outside any channel (ignored)", name)
            return
        key = (peer, message_id)
        if key in self._table.channels:
            log.warning("duplicate message id %s from %s (ignored)", protocol.printable(message_id), _peer_repr(peer))
            return
        call = _ServerCall(key, message_id, envelope, name, time.monotonic())
        self._table.add(call)
        if self.pool_size is None or self._running < self.pool_size:
            self._launch(call, name, args)
        else:
            self._backlog.append((call, name, args))
        self._idle.clear()

    def _launch(self, call: _ServerCall, name: str, args: Any) -> None:
        self._running += 1
        if self._idle_workers:
            waiter = self._idle_workers.pop()
            call.task = waiter.greenlet
            gevent.get_hub().loop.run_callback(waiter.switch, (call, name, args))
        else:
            call.task = gevent.spawn(self._work, call, name, args)

    def _work(self, call: _ServerCall, name: str, args: Any) -> None:
        """A call greenlet: serve this call, then park and serve more while the server lives."""
        job: Optional[Tuple[_ServerCall, str, Any]] = (call, name, args)
        while job is not None:
            self._serve(*job)
            if self.closed or len(self._idle_workers) >= _MAX_IDLE_WORKERS:
                return
            waiter = Waiter()
            self._idle_workers.append(waiter)
            job = waiter.get()

    def _reject(self, envelope: List[bytes], message_id: Any, name: str, message: str) -> None:
        payload = self._payload(message_id, protocol.ERR, protocol.error_args(name, message, ""))
        try:
            self._transport.try_send([*envelope, payload])
        except Exception as exc:
            log.debug("could not send ERR %s: %s", name, exc)

    # -- serving one call ------------------------------------------------------
    def _lookup_public(self, method: str) -> Callable[..., Any]:
        func = self._methods.get(method)
        if func is None:
            raise NameError(method)
        return func

    def _resolve(self, name: str, args: Any) -> Tuple[str, Callable[..., Any], list, dict]:
        kwargs: dict = {}
        if name == protocol.KWCALL:
            if not (isinstance(args, list) and len(args) == 3 and isinstance(args[0], str)
                    and isinstance(args[1], list) and isinstance(args[2], dict)):
                raise TypeError("a keyword call needs args [method, [positional...], {keyword: value}]")
            name, args, kwargs = args
        if not isinstance(args, list):
            raise TypeError(f"the arguments of {name}() must be an array, got {type(args).__name__}")
        func = self._methods.get(name) or self._builtins.get(name)
        if func is None:
            raise NameError(name)
        return name, func, args, kwargs

    def _serve(self, call: _ServerCall, name: str, args: Any) -> None:
        call.running = True
        try:
            try:
                if call.cancelled is not None:
                    raise call.cancelled
                name, func, args, kwargs = self._resolve(name, args)
                call.method = name
                result = func(*args, **kwargs)
                if self._streams.get(func) or (
                    self.stream_generators and isinstance(result, types.GeneratorType)
                ):
                    self._stream(call, result)
                else:
                    self._reply(call, protocol.OK, [result])
            except _Cancelled as cancel:
                log.info("call %s() stopped: %s", protocol.printable(call.method), cancel.reason)
                if cancel.reply:
                    try:
                        self._reply(call, protocol.ERR, protocol.error_args(*cancel.reply, ""))
                    except (PeerUnreachable, ClosedError):
                        pass
            except (PeerUnreachable, ClosedError):
                log.info("call %s(): caller disconnected, result dropped", protocol.printable(call.method))
            except Exception as exc:
                self._reply_error(call, exc)
        finally:
            call.running = False  # from here on, no cancel may reach this greenlet
            self._table.discard(call)
            self._running -= 1
            self._next()

    def _next(self) -> None:
        backlog = self._backlog
        while backlog and (self.pool_size is None or self._running < self.pool_size):
            call, name, args = backlog.popleft()
            if call.cancelled is None:
                self._launch(call, name, args)
        if not self._running and not backlog:
            self._idle.set()

    def _reply(self, call: _ServerCall, name: str, args: Any) -> None:
        # Encode first: a value msgpack refuses must not use up the caller's credit.
        payload = self._payload(call.channel_id, name, args)
        self._wait_credit(call)
        call.credit -= 1
        self._send(call, payload)

    def _reply_error(self, call: _ServerCall, exc: BaseException) -> None:
        if isinstance(exc, NameError) and str(exc) == call.method:
            log.warning("unknown method %s called", protocol.printable(call.method))
            tb = f"NameError: {call.method}\n"
        else:
            log.warning("call %s() raised %s: %s", protocol.printable(call.method), type(exc).__name__, protocol.printable(str(exc), 200))
            log.debug("traceback of %s()", protocol.printable(call.method), exc_info=exc)
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if not self.send_tracebacks:
            tb = "(traceback withheld by the server)"
        message = str(exc)
        if isinstance(exc, TypeError) and "serialize" in message:
            message = f"the result of {call.method}() cannot be sent: {message}"
        try:
            self._reply(call, protocol.ERR, protocol.error_args(type(exc).__name__, message, tb))
        except (_Cancelled, PeerUnreachable, ClosedError):
            pass

    def _stream(self, call: _ServerCall, iterable: Iterable[Any]) -> None:
        iterator = iter(iterable)
        try:
            for item in iterator:
                self._reply(call, protocol.STREAM, item)
            self._reply(call, protocol.STREAM_DONE, None)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # runs the generator's finally now, not at garbage collection

    # -- credit, cancel, heartbeat loss -----------------------------------------
    def _wait_credit(self, call: _ServerCall) -> None:
        while call.credit <= 0:
            if call.credit_ready is None:
                call.credit_ready = Event()
            call.credit_ready.clear()
            call.credit_ready.wait()

    def _grant(self, call: _ServerCall, args: Any) -> None:
        try:
            amount = protocol.parse_credit(args)
        except protocol.ProtocolError as exc:
            log.warning("bad %s for %s() (ignored): %s", protocol.MORE, protocol.printable(call.method), exc)
            return
        if not 0 <= amount <= _MAX_CREDIT:
            log.warning("%s credit %d out of range (ignored)", protocol.MORE, amount)
            return
        call.credit = min(call.credit + amount, _MAX_CREDIT)
        if call.credit_ready is not None:
            call.credit_ready.set()

    def _cancel(self, call: _ServerCall, reason: _Cancelled) -> None:
        if call.cancelled is not None:
            return
        call.cancelled = reason
        self._table.discard(call)
        task = call.task
        if task is None:  # still waiting in line: it will be skipped
            if reason.reply:
                self._reject(call.envelope, call.channel_id, *reason.reply)
            gevent.get_hub().loop.run_callback(self._next)
        elif call.running and task is not gevent.getcurrent():
            gevent.get_hub().loop.run_callback(self._interrupt, call, reason)
        # a task spawned but not yet running sees call.cancelled when it starts

    @staticmethod
    def _interrupt(call: _ServerCall, reason: _Cancelled) -> None:
        """Raise ``reason`` in the call's greenlet, if it is still serving that call.

        Greenlets are reused, so the check happens here, in the hub, at the
        moment of delivery: a cancel can never reach the next call.
        """
        task = call.task
        if call.running and task is not None and not task.dead:
            task.throw(reason)

    def _on_lost(self, call: Channel) -> None:
        assert isinstance(call, _ServerCall)
        log.warning("lost the caller of %s() (no heartbeat for %gs); cancelling it",
                    protocol.printable(call.method), 2 * (self.heartbeat or 0))
        self._cancel(call, _Cancelled("caller lost"))

    def _frames(self, channel: Channel, payload: bytes) -> List[Any]:
        return [*channel.envelope, payload]  # type: ignore[attr-defined]

    def _link(self, channel: Channel) -> Transport:
        return self._transport

    # -- introspection ------------------------------------------------------
    def _inspect(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "methods": {m: _methods.describe(f) for m, f in self._methods.items()},
        }


def _peer_repr(peer: Any) -> str:
    if isinstance(peer, bytes):
        return peer.hex()
    return "/".join(p.hex() for p in peer)

