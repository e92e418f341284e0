"""The zrpc client: a DEALER socket multiplexing every call of every greenlet.

The client owns calls in flight: each is a channel with a future, one timer
for its timeout (none for heartbeats: one greenlet pings all open calls), and,
for streams, a bounded buffer that grants credit as the reader consumes.
Replies are routed by ``response_to`` from the single reader greenlet.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import gevent
import zmq
from gevent.event import AsyncResult, Event

from ..core import protocol
from ..core.channel import Channel, StreamWindow
from ..core.errors import (
    ClosedError,
    KeywordArgumentsUnsupported,
    LostRemote,
    RemoteError,
    TimeoutExpired,
)
from .node import DEFAULT_MAX_MESSAGE_SIZE, Node, Tracer

__all__ = ["Client", "Future", "Stream", "Batch"]

log = logging.getLogger("zrpc.client")

#: A call's result to come: gevent's AsyncResult (``get``, ``ready``, ``wait``,
#: ``exception``...), usable with ``gevent.wait`` and ``gevent.joinall``.
Future = AsyncResult

_END = object()
_UNSET = object()


class _Call(Channel):
    __slots__ = ("method", "kwnames", "future", "timer", "timeout", "stream", "link")

    def __init__(self, message_id: bytes, method: str, kwnames: Optional[Sequence[str]],
                 timeout: Optional[float], now: float) -> None:
        super().__init__(message_id, message_id, None, now)
        self.method = method
        self.kwnames = kwnames
        self.future: AsyncResult = AsyncResult()
        self.timer: Any = None
        self.timeout = timeout
        self.stream: Optional[_StreamState] = None
        self.link: Any = None  # the socket (so the server) this call went to

    def stop_timer(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.close()


class _StreamState:
    """A stream's buffer and credit, reached by the reader through its call.

    Kept apart from the user's :class:`Stream` handle so that dropping the
    handle (``break``) lets it be collected and cancel the server's generator.
    """

    __slots__ = ("client", "call", "items", "ready", "window", "done")

    def __init__(self, client: "Client", call: _Call, window: int) -> None:
        self.client = client
        self.call = call
        self.items: Deque[Any] = deque()
        self.ready = Event()
        self.window = StreamWindow(window)
        self.done = False

    def push(self, item: Any) -> None:
        self.items.append(item)
        self.ready.set()
        self.window.received()
        if self.window.overflowing:
            self.fail(protocol.ProtocolError("the server sent more stream items than it was granted"))

    def fail(self, exc: BaseException) -> None:
        self.items.append(_Failure(exc))
        self.ready.set()

    def next(self) -> Any:
        if self.done:
            raise StopIteration
        call = self.call
        while not self.items:
            self.ready.clear()
            if not self.ready.wait(call.timeout):
                self.close()
                raise TimeoutExpired(call.timeout, f"waiting for the next item of {call.method}()")
        item = self.items.popleft()
        if item is _END:
            self.done = True
            self.client._table.discard(call)
            raise StopIteration
        if isinstance(item, _Failure):
            self.done = True
            self.client._table.discard(call)
            raise item.exc
        grant = self.window.taken()
        if grant:
            self.client._grant(call, grant)
        return item

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.items.clear()
            self.client._abandon(self.call)


class Stream:
    """The items of a streamed result, as they arrive. Iterate it; close it (or break) to stop early.

    Waiting for each item is bounded by the call's timeout; heartbeats keep
    a quiet stream alive in between. Closing an unfinished stream, or
    dropping it, tells a zrpc server to stop its generator at once.
    """

    __slots__ = ("_state",)

    def __init__(self, state: _StreamState) -> None:
        self._state = state

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        return self._state.next()

    def close(self) -> None:
        """Stop receiving; an unfinished stream is cancelled on the server. Idempotent."""
        self._state.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._state.close()
        except Exception:
            pass


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Caller:
    """The calling API, shared by Client and the views returned by ``with_options``."""

    _client: "Client"
    _timeout: Optional[float]

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` with these arguments and return its result (a Stream for stream methods).

        Raises RemoteError, TimeoutExpired, LostRemote or KeywordArgumentsUnsupported.
        """
        return self._client._start(method, args, kwargs, self._timeout).get()

    def call_async(self, method: str, /, *args: Any, **kwargs: Any) -> Future:
        """Start calling ``method`` and return its Future at once (``.get()`` waits for the result)."""
        return self._client._start(method, args, kwargs, self._timeout)

    def batch(self) -> "Batch":
        """A Batch that sends queued calls together (see :class:`Batch`)."""
        return Batch(self)

    def __getattr__(self, method: str) -> "_RemoteMethod":
        # Private names are never remote methods, except zerorpc's built-ins.
        if method.startswith("_") and not method.startswith("_zerorpc_"):
            raise AttributeError(method)
        return _RemoteMethod(self, method)


class _RemoteMethod:
    __slots__ = ("_caller", "_name")

    def __init__(self, caller: _Caller, name: str) -> None:
        self._caller = caller
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._caller.call(self._name, *args, **kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> Future:
        """Start the call and return its Future at once."""
        return self._caller.call_async(self._name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name}>"


class _Options(_Caller):
    def __init__(self, client: "Client", timeout: Optional[float]) -> None:
        self._client = client
        self._timeout = timeout


class Client(_Caller, Node):
    """Call a zrpc or zerorpc server: ``client.add(1, 2)``, ``client.call("add", 1, 2)``.

    ``endpoint`` is one endpoint or a list: each new call goes to the next
    server that is up, and every later event of that call (heartbeats,
    stream credit, cancel) follows it to the same server.
    ``timeout`` (seconds) bounds every call, sending included.
    ``heartbeat`` (seconds, None to disable) should match the server's.
    Keyword arguments go to the remote method; call options never collide
    with them because they are set with :meth:`with_options`.
    One client is safely shared by any number of greenlets of one thread.
    ``socket_options`` and ``trace`` are as for :class:`Server`.
    """

    _socket_type = zmq.DEALER

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
    ) -> None:
        Node.__init__(self, heartbeat, context, max_message_size, socket_options, trace)
        self._client = self
        self._next_link = 0
        self._timeout = timeout
        self.stream_window = stream_window
        self._hub_loop = gevent.get_hub().loop
        if isinstance(endpoint, str):
            endpoint = [endpoint]
        for ep in endpoint or ():
            self.connect(ep)
        self._start_io()

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout

    def connect(self, endpoint: str) -> str:
        """Connect to one more server; new calls are spread over every server that is up.

        Each endpoint gets its own socket, so a call's later events reach the
        server that took it (one shared DEALER would scatter them).
        """
        return self._new_transport().connect(endpoint)

    def bind(self, endpoint: str) -> str:
        """Listen for a server that connects (reverse direction); returns the bound endpoint.

        Use one server per bound endpoint: several servers behind one bound
        socket would share its round robin, as with zerorpc.
        """
        return self._new_transport().bind(endpoint)

    def with_options(self, *, timeout: Any = _UNSET) -> _Caller:
        """A view of this client (same connection) whose calls use these options.

        ``client.with_options(timeout=2).add(1, 2)``; ``timeout=None`` waits
        forever. The view has ``call``, ``call_async``, ``batch`` and
        attribute-style methods.
        """
        return _Options(self, self._timeout if timeout is _UNSET else timeout)

    def close(self) -> None:
        """Fail calls in flight with ClosedError, tell their servers to cancel them, and release the sockets at once."""
        if self.closed:
            return
        for call in list(self._table):
            self._fail(call, ClosedError("the client was closed"))
            self._emit_nowait(call, protocol.CANCEL, [])  # the server stops the work now
        self._close_io()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- starting a call ------------------------------------------------------
    def _start(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any],
               timeout: Optional[float]) -> Future:
        if isinstance(method, bytes):
            method = method.decode()
        if self.closed:
            raise ClosedError("the client is closed")
        message_id = next(self._ids)
        if kwargs:
            name, wire_args, kwnames = protocol.KWCALL, [method, args, kwargs], tuple(kwargs)
        else:
            name, wire_args, kwnames = method, args, None
        try:
            header = protocol.new_header(message_id)
            payload = protocol.encode(header, name, wire_args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"cannot send the arguments of {method}(): {exc}") from None
        if self._trace is not None:
            self._trace("send", header, name, wire_args)
        start = time.monotonic()
        call = _Call(message_id, method, kwnames, timeout, start)
        frames = [b"", payload]
        call.link = self._send_request(frames)
        if call.link is None:
            try:
                call.link = self._send_request_slowly(frames, None if timeout is None else start + timeout)
            except TimeoutExpired:
                call.future.set_exception(TimeoutExpired(timeout, self._calling(method) + " (no server took it)"))
                return call.future
            call.last_sent = call.last_recv = time.monotonic()
        self._table.add(call)
        if timeout is not None:
            call.timer = self._hub_loop.timer(max(start + timeout - call.last_sent, 0.0))
            call.timer.start(self._expire, call)
        return call.future

    def _send_request(self, frames: List[Any]) -> Any:
        """Hand a request to the next link that can take it now (round robin); None if none can."""
        links = self._transports
        count = len(links)
        first = self._next_link
        for offset in range(count):
            link = links[(first + offset) % count]
            if link.try_send(frames):
                self._next_link = (first + offset + 1) % count
                return link
        return None

    def _send_request_slowly(self, frames: List[Any], deadline: Optional[float]) -> Any:
        """Wait until some link can take the request, or raise TimeoutExpired at ``deadline``."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(None)
            ready = [link.arm_writable() for link in self._transports]
            if not any(event.is_set() for event in ready):
                gevent.wait(ready or [Event()], timeout=remaining, count=1)
            if self.closed:
                raise ClosedError("the client was closed")
            link = self._send_request(frames)
            if link is not None:
                return link

    def _calling(self, method: str) -> str:
        return f"calling {method}() on {', '.join(self.endpoints) or 'no endpoint'}"

    # -- events from the server -------------------------------------------------
    def _on_frames(self, frames: List[bytes]) -> None:
        try:
            header, name, args = protocol.decode(frames[-1], self.max_message_size)
        except protocol.ProtocolError as exc:
            call = self._table.get(exc.header.get("response_to")) if exc.header else None
            log.warning("bad message from the server: %s", protocol.printable(str(exc), 300))
            if call is not None:
                self._fail(call, exc)
            return
        if self._trace is not None:
            self._trace("recv", header, name, args)
        call = self._table.get(header.get("response_to"))
        if call is None:
            log.debug("event %s for no call in flight (late reply or heartbeat; ignored)", protocol.printable(name))
            return
        call.last_recv = time.monotonic()
        if name == protocol.OK:
            self._finish(call)
            if call.stream is not None:
                call.stream.fail(protocol.ProtocolError("the server sent OK in the middle of a stream"))
            elif type(args) is list and args:
                call.future.set(args[0])
            else:
                call.future.set_exception(protocol.ProtocolError(f"OK reply without a result: {args!r}"))
        elif name == protocol.ERR:
            self._finish(call)
            self._fail_result(call, self._remote_error(call, args))
        elif name == protocol.STREAM:
            self._stream_of(call).push(args)
        elif name == protocol.STREAM_DONE:
            self._stream_of(call).push(_END)
        elif name not in protocol.CONTROL_EVENTS:
            log.warning("unexpected event %s in reply to %s() (ignored)", protocol.printable(name), call.method)

    def _stream_of(self, call: _Call) -> _StreamState:
        state = call.stream
        if state is None:
            state = call.stream = _StreamState(self, call, self.stream_window)
            call.stop_timer()  # from now on, the timeout applies between items
            call.future.set(Stream(state))
            # Only the caller may keep the Stream alive: dropping it must cancel the stream.
            call.future = None  # type: ignore[assignment]
        return state

    def _remote_error(self, call: _Call, args: Any) -> Exception:
        name, msg, tb = protocol.unwrap_error(args)
        if call.kwnames and name == "NameError" and protocol.KWCALL in msg:
            return KeywordArgumentsUnsupported(
                f"{call.method}() was called with keyword arguments ({', '.join(call.kwnames)}), "
                "but the server cannot take them (it is a zerorpc server, not zrpc): "
                "pass them positionally"
            )
        return RemoteError(name, msg, tb)

    def _finish(self, call: _Call) -> None:
        call.stop_timer()
        self._table.discard(call)

    def _fail_result(self, call: _Call, exc: BaseException) -> None:
        if call.stream is not None:
            call.stream.fail(exc)
        elif not call.future.ready():
            call.future.set_exception(exc)

    def _fail(self, call: _Call, exc: BaseException) -> None:
        self._finish(call)
        self._fail_result(call, exc)

    def _expire(self, call: _Call) -> None:
        call.timer = None
        if self._table.get(call.key) is not call:
            return
        self._fail(call, TimeoutExpired(call.timeout, self._calling(call.method)))
        self._emit_nowait(call, protocol.CANCEL, [])

    def _on_lost(self, call: Channel) -> None:
        assert isinstance(call, _Call)
        self._fail(call, LostRemote(
            f"lost the server while {self._calling(call.method)}: "
            f"no heartbeat for {2 * (self.heartbeat or 0):g}s"))

    def _abandon(self, call: _Call) -> None:
        if self._table.get(call.key) is call:
            self._finish(call)
            self._emit_nowait(call, protocol.CANCEL, [])

    def _grant(self, call: _Call, amount: int) -> None:
        if self._table.get(call.key) is call:
            self._emit_nowait(call, protocol.MORE, [amount])

    def _frames(self, channel: Channel, payload: bytes) -> List[Any]:
        return [b"", payload]

    def _link(self, channel: Channel) -> Any:
        return channel.link  # type: ignore[attr-defined]


class Batch:
    """Calls queued, then sent together: all in flight at once, results in order.

    ``batch.add(1, 2)`` or ``batch.call("add", 1, 2)`` queue a call and
    return its index; ``batch.run()`` sends them all and returns their
    results in order, a failed call's exception standing in its slot. Works
    against zerorpc servers too: it is only pipelining.
    """

    def __init__(self, caller: _Caller) -> None:
        self._caller = caller
        self._calls: List[tuple] = []

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> int:
        """Queue one call; return its index in the results."""
        self._calls.append((method, args, kwargs))
        return len(self._calls) - 1

    def __getattr__(self, method: str) -> Callable[..., int]:
        if method.startswith("_") and not method.startswith("_zerorpc_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def __len__(self) -> int:
        return len(self._calls)

    def run(self) -> List[Any]:
        """Send every queued call, wait for all, and return results (or exceptions) in order."""
        calls, self._calls = self._calls, []
        futures = []
        for method, args, kwargs in calls:
            try:
                futures.append(self._caller.call_async(method, *args, **kwargs))
            except Exception as exc:  # e.g. arguments msgpack cannot encode
                failed: AsyncResult = AsyncResult()
                failed.set_exception(exc)
                futures.append(failed)
        results = []
        for future in futures:
            future.wait()
            results.append(future.value if future.successful() else future.exception)
        return results
