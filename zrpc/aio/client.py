"""The asyncio client: a DEALER socket per server, multiplexing every call of every task.

Requests are built and replies routed by
:class:`zrpc.core.client_session.ClientSession`, exactly as for the gevent
client; this module owns what a caller awaits: an asyncio future per call,
one loop timer for its timeout, and, for streams, a buffer that grants
credit as the reader consumes. Cancelling the future (or the task awaiting
it) sends zrpc's cancel, so the server stops the work at once.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from functools import partial
from typing import Any, Dict, Generator, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import zmq

from ..core.calling import CallQueue, Caller, OptionsView
from ..core.balancing import ResolvedName
from ..core.client_session import ClientCall
from ..core.errors import ClosedError, TimeoutExpired
from ..core.intercept import ClientCallInfo, Interceptor
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..nodes import END_OF_STREAM, ClientBase, Resolver, StreamBuffer, StreamHandle
from .node import Node
from .transport import Transport

__all__ = ["Client", "Call", "Stream", "Batch"]

log = logging.getLogger("zrpc.client")

class _StreamState(StreamBuffer):
    """A stream's buffer (see :class:`zrpc.nodes.StreamBuffer`); the reader awaits a future."""

    __slots__ = ("waiter",)

    def __init__(self, client: "Client", call: ClientCall) -> None:
        super().__init__(client, call)
        self.waiter: Optional[asyncio.Future] = None

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Any:
        if self.done:
            raise StopAsyncIteration
        while not self.items:
            self.waiter = waiter = self.client._loop.create_future()
            try:
                await asyncio.wait_for(waiter, self.call.timeout)
            except asyncio.TimeoutError:
                raise self._timed_out() from None
            except asyncio.CancelledError:
                self.close()  # the task awaiting the stream was cancelled: so is the stream
                raise
        item = self._take()
        if item is END_OF_STREAM:
            raise StopAsyncIteration
        await self.client._grant(self.call)
        return item


class Stream(StreamHandle):
    """The items of a streamed result, as they arrive: ``async for item in stream``.

    Waiting for each item is bounded by the call's timeout. Closing an
    unfinished stream, dropping it, or cancelling the task iterating it
    tells a zrpc server to stop its generator at once.
    """

    __slots__ = ()

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> Any:
        return await self._state.next()

    async def aclose(self) -> None:
        """As :meth:`close` (for ``contextlib.aclosing``)."""
        self._state.close()

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()



class Call:
    """A call not awaited yet: ``await`` it for the result, or ``async for`` over a stream's items.

    The request goes out on first use (``await``, ``async for`` or
    :meth:`future`), once.
    """

    __slots__ = ("_caller", "_method", "_args", "_kwargs", "_future", "_stream", "_iterating")

    def __init__(self, caller: "_Caller", method: str, args: tuple, kwargs: Dict[str, Any]) -> None:
        self._caller = caller
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._future: Optional[asyncio.Future] = None
        self._stream: Optional[Stream] = None
        self._iterating = False

    def future(self) -> asyncio.Future:
        """Start the call (if not yet) and return its future."""
        if self._future is None:
            caller = self._caller
            client = caller._client
            if client._interceptors:  # the chain runs in a task of its own (with a copy of this context)
                self._future = asyncio.ensure_future(client._call_intercepted(
                    self._method, self._args, self._kwargs, caller._timeout, caller._headers))
            else:
                self._future = client._start(self._method, self._args, self._kwargs, caller._timeout,
                                             caller._headers)
        return self._future

    def __await__(self) -> Generator[Any, None, Any]:
        return self.future().__await__()

    def __aiter__(self) -> "Call":
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        if stream is None:
            self._iterating = True
            result = await self.future()
            if not isinstance(result, Stream):
                raise TypeError(f"{self._method}() returned a value, not a stream: await it instead")
            stream = self._stream = result
        return await stream.__anext__()

    def __del__(self) -> None:
        # Leaving an `async for` early drops this object: stop the stream now.
        # (An awaited Call is dropped at once too, but its future lives on: leave it.)
        if not self._iterating:
            return
        try:
            if self._stream is not None:
                self._stream.close()
            elif self._future is not None and not self._future.done():
                self._future.cancel()
        except Exception:
            pass


class _Caller(Caller):
    """The calling API, shared by Client and the views returned by ``with_options``."""

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Call:
        """``await client.call("add", 1, 2)``: the result (a Stream for stream methods).

        Raises RemoteError, TimeoutExpired, LostRemote or KeywordArgumentsUnsupported.
        """
        return Call(self, method, args, kwargs)


class _Options(OptionsView, _Caller):
    pass


class Client(_Caller, ClientBase, Node):
    """Call a zrpc or zerorpc server from asyncio: ``await client.add(1, 2)``.

    Takes the options of :class:`zrpc.Client` (``timeout``, ``heartbeat``,
    ``stream_window``, ``max_message_size``, ``context``, ``socket_options``,
    ``trace``, ``curve_server_key``, ``curve_secret_key``, ``dns_refresh``,
    ``resolver``) with the same meaning, and balances over several servers
    the same way. Make it inside a coroutine: it belongs to the running loop,
    and any number of tasks of that loop may share it. ``async with`` closes it.
    ``headers``, ``interceptors`` and ``inherit_deadline`` are as for
    :class:`zrpc.Client`; an interceptor may be ``async def`` (``proceed()``
    returns an awaitable of the result here; for ``call_async``, the future).
    """

    _options_class = _Options
    _stream_state = _StreamState
    _stream_handle = Stream

    def __init__(
        self,
        endpoint: Union[str, Sequence[str], None] = None,
        *,
        timeout: Optional[float] = 30.0,
        heartbeat: Optional[float] = 5.0,
        stream_window: int = 256,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        context: Optional[zmq.Context] = None,
        socket_options: Optional[Mapping[int, Any]] = None,
        trace: Optional[Tracer] = None,
        curve_server_key: Any = None,
        curve_secret_key: Any = None,
        dns_refresh: Optional[float] = 30.0,
        resolver: Optional[Resolver] = socket.getaddrinfo,
        headers: Optional[Mapping[str, Any]] = None,
        interceptors: Iterable[Interceptor] = (),
        inherit_deadline: bool = True,
    ) -> None:
        self._init_client(endpoint, timeout=timeout, heartbeat=heartbeat, stream_window=stream_window,
                          max_message_size=max_message_size, context=context, socket_options=socket_options,
                          trace=trace, curve_server_key=curve_server_key, curve_secret_key=curve_secret_key,
                          dns_refresh=dns_refresh, resolver=resolver,
                          headers=headers, interceptors=interceptors, inherit_deadline=inherit_deadline)

    async def close(self) -> None:
        """Fail calls in flight with ClosedError, tell their servers to cancel them, release the sockets."""
        if self._closed:
            return
        self._close_calls()
        await self._close_io()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # -- starting a call --------------------------------------------------------
    def _start(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any], timeout: Optional[float],
               headers: Optional[Dict[str, Any]] = None, async_: bool = False,
               message_id: Optional[bytes] = None) -> asyncio.Future:
        if isinstance(method, bytes):
            method = method.decode()
        if self._closed:
            raise ClosedError("the client is closed")
        loop = self._loop
        start = time.monotonic()
        call, payload = self._session.request(method, args, kwargs, timeout, start, headers, message_id)
        timeout = call.timeout  # at most what remains of the deadline of the call being served
        call.future = future = loop.create_future()
        future.add_done_callback(partial(self._on_done, call))
        frames = [b"", payload]
        if timeout is not None:
            call.timer = loop.call_later(timeout, self._expire, call)
        if not self._send_request(call, frames, start):
            self._background(self._send_request_slowly(call, frames, future))
        return future

    async def _call_intercepted(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any],
                                timeout: Optional[float], headers: Optional[Dict[str, Any]]) -> Any:
        info = ClientCallInfo(method, args, kwargs, headers, timeout, False)
        try:
            result = self._run_chain(info)
            if inspect.isawaitable(result):
                result = await result
            return result
        except BaseException as exc:
            info._settle(exc)
            raise

    def _wait(self, future: asyncio.Future) -> Any:
        return future  # the caller awaits it (through the interceptors, if any)

    def _settled(self, result: Any, info: ClientCallInfo) -> Any:
        if asyncio.isfuture(result):
            if info.async_:
                result.add_done_callback(lambda done: info._settle(*_outcome_of(done)))
                return result
        elif not inspect.isawaitable(result):
            info._settle(None, result)
            return result
        return self._awaited(result, info)

    @staticmethod
    async def _awaited(awaitable: Any, info: ClientCallInfo) -> Any:
        """Await what the chain returned (an async interceptor may retry inside it), then settle ``info``."""
        try:
            value = await awaitable
        except BaseException as exc:
            info._settle(exc)
            raise
        info._settle(None, value)
        return value

    async def _send_request_slowly(self, call: ClientCall, frames: List[Any], future: asyncio.Future) -> None:
        """Wait until some socket is up with room; the call's timer (or a cancel) ends the wait."""
        while not future.done():
            refused = self._refusal()
            if refused is not None:  # every server refused us: waiting cannot help
                future.set_exception(refused)
                return
            # A socket with no live connection would queue the request for a
            # server that may never come: wait for one that is up and has room.
            changes = [t.writable() if room else t.changed() for t, room in self._waits()]
            if not any(w.done() for w in changes):
                await asyncio.wait([future, *changes], return_when=asyncio.FIRST_COMPLETED)
            if self._closed or future.done():
                return
            try:
                if self._send_waited(call, frames):
                    return
            except ClosedError:
                return

    def _on_done(self, call: ClientCall, future: asyncio.Future) -> None:
        if future.cancelled():
            self._abandon(call)

    # -- the waiting behind zrpc.nodes.ClientBase ----------------------------------
    _resolve_at_connect = False  # a blocking getaddrinfo must not stall the loop

    def _refresh(self, name: ResolvedName) -> None:
        self._background(self._refresh_in_thread(name))

    async def _refresh_in_thread(self, name: ResolvedName) -> None:
        # A resolver blocks (socket.getaddrinfo does): in the executor, so the loop runs on.
        self._resolved(name, await self._loop.run_in_executor(None, self._lookup, name))

    def _settle(self, call: ClientCall, value: Any) -> None:
        self._stop_timer(call)
        self._resolve(call.future, value)

    @staticmethod
    def _cancel_timer(timer: Any) -> None:
        timer.cancel()

    @staticmethod
    def _resolve(future: Optional[asyncio.Future], value: Any) -> bool:
        if future is None or future.done():
            return False
        future.set_result(value)
        return True

    @staticmethod
    def _reject(future: Optional[asyncio.Future], exc: BaseException) -> None:
        if future is not None and not future.done():
            future.set_exception(exc)

    async def _grant(self, call: ClientCall) -> None:
        """Send the credit due to a stream's server, waiting (within the call's timeout) for room."""
        due = self._grant_due(call)
        if due is not None:
            try:
                await self._send(call, due[1], due[2], call.timeout)
            except (ClosedError, TimeoutExpired) as exc:
                self._grant_failed(call, exc)
            else:
                call.window.sent(due[0])

def _outcome_of(future: asyncio.Future) -> Tuple[Optional[BaseException], Any]:
    if future.cancelled():
        return asyncio.CancelledError(), None
    error = future.exception()
    return error, None if error is not None else future.result()


class Batch(CallQueue):
    """Calls queued, then sent together: ``i = batch.add(1, 2)``; ``results = await batch.run()``.

    Results come in order, a failed call's exception standing in its slot.
    """

    def __init__(self, caller: _Caller) -> None:
        super().__init__()
        self._caller = caller

    async def run(self) -> List[Any]:
        """Send every queued call, wait for all, and return results (or exceptions) in order."""
        futures = []
        for method, args, kwargs in self._take():
            try:
                futures.append(self._caller.call_async(method, *args, **kwargs))
            except Exception as exc:  # e.g. arguments msgpack cannot encode
                failed = self._caller._client._loop.create_future()
                failed.set_exception(exc)
                futures.append(failed)
        return list(await asyncio.gather(*futures, return_exceptions=True))


_Caller._batch_class = Batch
