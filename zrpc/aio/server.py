"""The asyncio server: a ROUTER socket whose calls each run in their own task.

What an incoming message means (start, queue, credit, cancel, refuse) is
decided by :class:`zrpc.core.server_session.ServerSession`, as for the
gevent server; this module performs it: a task per call, waiting for
credit, cancelling a call's task, clean shutdown.

How a method runs:

* ``async def``: awaited in the call's task; a cancel cancels the task.
* an async generator function: streamed, item by item, under credit.
* a plain function: in a thread of the server's own bounded pool by
  default (``sync_methods="thread"``, ``threads`` of them), so that one
  blocking function cannot freeze the loop; ``sync_methods="inline"`` runs
  it in the loop instead (the fastest, for functions known not to block).
  A cancelled plain function cannot be interrupted: it runs to its end and
  its result is dropped. A plain generator is iterated the same way.
"""
from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import types
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import zmq

from ..core import protocol
from ..core.errors import ClosedError
from ..core.protocol import printable
from ..core.intercept import _CURRENT, Interceptor, current_call
from ..core.server_session import DEFAULT_MAX_PENDING, Cancellation, ServerCall
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..nodes import REJECT_WAIT, ServerBase
from .node import Node
from .security import ZapDriver
from .transport import PeerUnreachable

__all__ = ["Server", "current_call"]

log = logging.getLogger("zrpc.server")

_SYNC_MODES = ("thread", "inline")
# How a method is run, decided once per function.
_AWAIT, _AGEN, _INLINE, _THREAD = "await", "agen", "inline", "thread"
_DONE = object()


class Server(ServerBase, Node):
    """Serve the public callables of ``methods`` (an object, a module or a dict) from asyncio.

    Takes the options of :class:`zrpc.Server` (``name``, ``heartbeat``,
    ``pool_size``, ``max_pending``, ``send_tracebacks``, ``stream_generators``,
    ``max_message_size``, ``context``, ``socket_options``, ``trace``) with
    the same meaning, plus ``sync_methods`` ("thread" or "inline") and
    ``threads`` for plain functions (see the module docstring). The security
    options are as for :class:`zrpc.Server`. Make it inside a coroutine; ``bind``, then ``start()`` or ``await run()``; ``await close()``.
    ``interceptors`` are as for :class:`zrpc.Server`; one may be ``async
    def``: ``proceed()`` returns an awaitable here (a plain interceptor
    just returns it; ``zrpc.current_call()`` works in the call's task).
    """

    _event_class = asyncio.Event

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
        sync_methods: str = "thread",
        threads: int = 16,
        curve_secret_key: Any = None,
        curve_clients: Any = None,
        allow_ips: Optional[Iterable[str]] = None,
        deny_ips: Optional[Iterable[str]] = None,
        interceptors: Iterable[Interceptor] = (),
    ) -> None:
        if sync_methods not in _SYNC_MODES:
            raise ValueError(f"sync_methods must be one of {', '.join(_SYNC_MODES)}, not {sync_methods!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._sync_methods = sync_methods
        self._threads = threads
        self._pool: Optional[ThreadPoolExecutor] = None
        self._stopper: Optional["asyncio.Task[None]"] = None
        self._init_server(methods, name, exclude_from=Server, zap_driver=ZapDriver, heartbeat=heartbeat,
                          pool_size=pool_size, max_pending=max_pending, send_tracebacks=send_tracebacks,
                          stream_generators=stream_generators, max_message_size=max_message_size, trace=trace,
                          context=context, socket_options=socket_options, curve_secret_key=curve_secret_key,
                          curve_clients=curve_clients, allow_ips=allow_ips, deny_ips=deny_ips,
                          interceptors=interceptors)
        self._how: Dict[Callable[..., Any], str] = {f: _INLINE for f in self._session.methods.builtins.values()}

    # -- life cycle ------------------------------------------------------------
    def start(self) -> "Server":
        """Serve in the background of the running loop; returns at once."""
        return super().start()

    async def run(self) -> None:
        """Serve until :meth:`stop` or :meth:`close` is called (from another task)."""
        self.start()
        await self._stopped.wait()

    async def stop(self, timeout: Optional[float] = None) -> None:
        """Stop taking new calls; let calls in flight finish for up to ``timeout`` seconds, then cancel them.

        Awaited by a method of this server, it returns at once and the rest
        (waiting, then ``run()`` returning) goes on in a task of its own,
        until that call too is over and its reply sent.
        """
        self._session.stop(time.monotonic())
        if self._stopped_from_inside():
            # the calling call cannot wait for itself; the task is kept, asyncio holds tasks weakly
            self._stopper = contextvars.Context().run(self._loop.create_task, self._finish_stop(timeout))
        else:
            await self._finish_stop(timeout)

    async def _finish_stop(self, timeout: Optional[float]) -> None:
        """stop()'s waiting: for the calls in flight, then for the callers still sending."""
        session = self._session
        if not await self._wait_idle(timeout):
            self._cancel_open_calls()
            await self._wait_idle(1.0)
        while timeout != 0 and not self._closed:
            left = session.refusing_for(time.monotonic())
            if not left:
                break
            await asyncio.sleep(left)  # clients still sending get ServerStopping, not a closed socket
        self._stopped.set()

    async def _wait_idle(self, timeout: Optional[float]) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Cancel calls in flight and release the socket, flushing replies already queued (bounded)."""
        if self._closed:
            return
        self._session.stop(time.monotonic())
        # Waited here even inside a call: the others' ServerStopped must go out before the socket closes.
        await self._finish_stop(0)
        self._close_guard()
        await self._close_io()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- the waiting behind zrpc.nodes.ServerBase ---------------------------------
    def _launch(self, call: ServerCall) -> None:
        # A fresh context, not a copy of the launcher's: a queued call is launched by the call that
        # ended before it, whose contextvars must not reach it.
        call.task = contextvars.Context().run(self._loop.create_task, self._serve(call))

    def _interrupt_call(self, call: ServerCall, why: Cancellation) -> None:
        if call.task is not None and call.task is not asyncio.current_task():
            call.task.cancel()

    @staticmethod
    def _wake(waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_result(None)

    def _send_reject_later(self, frames: List[Any]) -> None:
        self._background(self._send_reject_slowly(frames))

    async def _send_reject_slowly(self, frames: List[Any]) -> None:
        error = None
        try:
            await self._transport.send(frames, time.monotonic() + REJECT_WAIT, REJECT_WAIT)
        except Exception as exc:
            error = exc
        finally:
            self._reject_sent(error)

    # -- serving one call -------------------------------------------------------
    def _how_to_run(self, func: Callable[..., Any]) -> str:
        how = self._how.get(func)
        if how is None:
            if inspect.iscoroutinefunction(func):
                how = _AWAIT
            elif inspect.isasyncgenfunction(func):
                how = _AGEN
            else:
                how = _INLINE if self._sync_methods == "inline" else _THREAD
            self._how[func] = how
        return how

    def _in_thread(self, func: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="zrpc-aio")
        # The thread sees the call's context, so current_call() works there too.
        return self._loop.run_in_executor(self._pool, partial(contextvars.copy_context().run, func, *args))

    async def _invoke(self, func: Callable[..., Any], how: str, args: Any, kwargs: Dict[str, Any]) -> Any:
        """Run the method as ``how`` says; return its result (an async generator is not awaited)."""
        if how is _AWAIT:
            result = await func(*args, **kwargs)
        elif how is _THREAD:
            result = await self._in_thread(partial(func, *args, **kwargs))
        else:
            result = func(*args, **kwargs)
        if inspect.isawaitable(result) and how is not _AGEN:
            result = await result  # a plain function that returned a coroutine
        return result

    async def _serve(self, call: ServerCall) -> None:
        session = self._session
        call.running = True
        _CURRENT.set(call)  # this task's own context
        outcome, error, result = "ok", None, None
        try:
            try:
                if call.cancelled is not None:
                    raise asyncio.CancelledError()
                name, func, args, kwargs = session.methods.resolve(call.method, call.args)
                call.method, call.args = name, None
                how = self._how_to_run(func)
                if self._interceptors:
                    result = self._intercepted(call, name, args, kwargs, partial(self._invoke, func, how))
                    if inspect.isawaitable(result):
                        result = await result
                else:
                    result = await self._invoke(func, how, args, kwargs)
                if isinstance(result, types.AsyncGeneratorType):
                    if call.info is not None:
                        call.info.stream = True
                    await self._stream_async(call, result)
                    result = None
                elif session.streams(func, isinstance(result, types.GeneratorType)):
                    if call.info is not None:
                        call.info.stream = True
                    await self._stream(call, result, how is _THREAD)
                    result = None
                else:
                    await self._reply(call, session.reply(call, protocol.OK, [result]))
            except asyncio.CancelledError as exc:
                outcome, error = "cancelled", exc
                why = call.cancelled
                if why is None:
                    raise  # not a zrpc cancel (the loop is shutting down)
                payload = session.cancelled_reply(call, why)
                if payload is not None and call.credit > 0:
                    self._send_nowait(call, payload)
            except (PeerUnreachable, ClosedError) as exc:
                outcome, error = "cancelled", exc
                log.info("call %s(): caller disconnected, result dropped", printable(call.method))
            except Exception as exc:
                outcome, error = "error", exc
                try:
                    await self._reply(call, session.error_reply(call, exc))
                except (asyncio.CancelledError, PeerUnreachable, ClosedError):
                    pass
        finally:
            call.running = False
            call.connection = None
            for ready in session.finished(call):
                self._launch(ready)
            if session.idle:
                self._idle.set()
            self._over(call, outcome, error, result)

    async def _reply(self, call: ServerCall, payload: bytes) -> None:
        """Send one encoded reply, waiting for the caller's credit first."""
        while call.credit <= 0:
            call.credit_ready = self._loop.create_future()
            await call.credit_ready
        call.credit -= 1
        call.reply_bytes += len(payload)
        await self._send(call, payload)

    async def _stream(self, call: ServerCall, iterable: Any, threaded: bool) -> None:
        session = self._session
        iterator = iter(iterable)
        try:
            while True:
                item = await self._in_thread(next, iterator, _DONE) if threaded else next(iterator, _DONE)
                if item is _DONE:
                    break
                await self._reply(call, session.reply(call, protocol.STREAM, item))
                call.deadline = None  # a stream's items are paced by its reader, not by its deadline
            await self._reply(call, session.reply(call, protocol.STREAM_DONE, None))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # runs the generator's finally now
                except ValueError:  # still executing in its thread (cancelled mid-item)
                    pass

    async def _stream_async(self, call: ServerCall, agen: Any) -> None:
        session = self._session
        try:
            async for item in agen:
                await self._reply(call, session.reply(call, protocol.STREAM, item))
                call.deadline = None  # a stream's items are paced by its reader, not by its deadline
            await self._reply(call, session.reply(call, protocol.STREAM_DONE, None))
        finally:
            await agen.aclose()
