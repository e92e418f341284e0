"""The gevent client: a DEALER socket per server, multiplexing every call of every greenlet.

Requests are built and replies routed by
:class:`zrpc.core.client_session.ClientSession`; this module owns what a
caller waits on: a future per call, one hub timer for its timeout (none
for heartbeats: one greenlet pings all open calls), and, for streams, a
bounded buffer that grants credit as the reader consumes.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import gevent
import zmq
from gevent.event import AsyncResult, Event

from ..core.calling import CallQueue, Caller, OptionsView
from ..core.client_session import END, ERROR, ITEM, RESULT, ClientCall, ClientSession
from ..core.errors import AuthenticationFailed, ClosedError, TimeoutExpired
from ..core.intercept import ClientCallInfo, Interceptor
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..nodes import ClientBase
from .node import Node
from ..security import ClientGuard
from .transport import Transport

__all__ = ["Client", "Future", "Stream", "Batch"]

log = logging.getLogger("zrpc.client")

#: A call's result to come: gevent's AsyncResult (``get``, ``ready``, ``wait``,
#: ``exception``...), usable with ``gevent.wait`` and ``gevent.joinall``.
Future = AsyncResult

_END = object()


class _StreamState:
    """A stream's buffer, reached by the reader through its call.

    Kept apart from the user's :class:`Stream` handle so that dropping the
    handle (``break``) lets it be collected and cancel the server's generator.
    """

    __slots__ = ("client", "call", "items", "ready", "done")

    def __init__(self, client: "Client", call: ClientCall) -> None:
        self.client = client
        self.call = call
        self.items: Deque[Any] = deque()
        self.ready = Event()
        self.done = False

    def push(self, item: Any) -> None:
        self.items.append(item)
        self.ready.set()

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
            raise StopIteration
        if isinstance(item, _Failure):
            self.done = True
            raise item.exc
        call.window.taken()
        self.client._grant(call)
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


class _Caller(Caller):
    """The calling API, shared by Client and the views returned by ``with_options``."""

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` with these arguments and return its result (a Stream for stream methods).

        Raises RemoteError, TimeoutExpired, LostRemote or KeywordArgumentsUnsupported.
        """
        client = self._client
        if client._interceptors:
            return client._intercepted(method, args, kwargs, self._timeout, self._headers, False)
        return client._start(method, args, kwargs, self._timeout, self._headers).get()

    def batch(self) -> "Batch":
        """A Batch that sends queued calls together (see :class:`Batch`)."""
        return Batch(self)


class _Options(OptionsView, _Caller):
    pass


class Client(_Caller, ClientBase, Node):
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
    ``passive_heartbeat`` is accepted for zerorpc code and ignored.
    ``curve_server_key`` (the server's public key: Z85 or a certificate
    file) turns on CURVE; ``curve_secret_key`` is this client's key (an
    ephemeral pair is made if None). A refused handshake fails the calls
    with AuthenticationFailed.
    ``headers`` go with every call (see :meth:`with_options`);
    ``interceptors`` wrap every call: ``interceptor(call, proceed)``, the
    first outermost. A call made while serving a call (inside a remote
    method) waits at most what remains of that call's deadline, unless
    ``inherit_deadline=False``.
    """

    _socket_type = zmq.DEALER
    _options_class = _Options

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
        passive_heartbeat: bool = False,
        headers: Optional[Mapping[str, Any]] = None,
        interceptors: Iterable[Interceptor] = (),
        inherit_deadline: bool = True,
    ) -> None:
        if passive_heartbeat:
            # zerorpc code passes it; zrpc's heartbeats already work against passive peers.
            log.debug("passive_heartbeat=True ignored: zrpc always sends heartbeats")
        session = ClientSession(heartbeat=heartbeat, stream_window=stream_window,
                                max_message_size=max_message_size, trace=trace, inherit_deadline=inherit_deadline)
        Node.__init__(self, session, context, socket_options)
        self._init_calling(headers, interceptors)
        self._session: ClientSession = session
        self._guard = ClientGuard(curve_server_key, curve_secret_key, self._on_handshake_failed)
        self._socket_setups.append(self._guard.setup)
        self._client = self
        self._timeout = timeout
        self._hub_loop = gevent.get_hub().loop
        if isinstance(endpoint, str):
            endpoint = [endpoint]
        for ep in endpoint or ():
            self.connect(ep)
        self._start_io()

    def close(self) -> None:
        """Fail calls in flight with ClosedError, tell their servers to cancel them, and release the sockets.

        Cancels already queued are flushed for at most ``CLOSE_LINGER`` seconds.
        """
        if self.closed:
            return
        session = self._session
        for call in session.open_calls():
            cancel = session.abandon(call)
            self._fail(call, ClosedError("the client was closed"))
            if cancel is not None:
                self._send_nowait(call, cancel)  # the server stops the work now
        self._guard.close()
        self._close_io()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- starting a call ------------------------------------------------------
    def _start(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any],
               timeout: Optional[float], headers: Optional[Dict[str, Any]] = None) -> Future:
        if isinstance(method, bytes):
            method = method.decode()
        if self.closed:
            raise ClosedError("the client is closed")
        if gevent.get_hub().loop is not self._hub_loop:
            raise RuntimeError(
                "this zrpc.Client belongs to another thread: gevent objects cannot be shared "
                "between threads; make one Client per thread (or call from the thread that made it)")
        start = time.monotonic()
        call, payload = self._session.request(method, args, kwargs, timeout, start, headers)
        timeout = call.timeout  # at most what remains of the deadline of the call being served
        call.future = future = AsyncResult()
        frames = [b"", payload]
        if not self._send_request(call, frames, start):
            try:
                self._send_request_slowly(call, frames, None if timeout is None else start + timeout)
            except TimeoutExpired:
                future.set_exception(TimeoutExpired(
                    timeout, self._session.calling(method) + " (no server took it)"))
                return future
            except AuthenticationFailed as exc:
                future.set_exception(exc)
                return future
        if timeout is not None:
            call.timer = self._hub_loop.timer(max(start + timeout - call.last_sent, 0.0))
            call.timer.start(self._expire, call)
        return future

    def _send_request_slowly(self, call: ClientCall, frames: List[Any], deadline: Optional[float]) -> None:
        """Wait until some socket can take the request, or raise TimeoutExpired at ``deadline``."""
        while True:
            refused = self._refusal()
            if refused is not None:
                raise AuthenticationFailed(str(refused))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(None)
            # A socket with no live connection would queue the request for a
            # server that may never come: wait for one that is up and has room.
            ready = []
            for transport in self._transports:
                transport.changed.clear()  # before looking, so no change is missed
                ready.append(transport.arm_writable() if transport.connections else transport.changed)
            if not any(event.is_set() for event in ready):
                gevent.wait(ready or [Event()], timeout=remaining, count=1)
            if self.closed:
                raise ClosedError("the client was closed")
            if self._send_request(call, frames, time.monotonic()):
                return

    def _watch(self, future: Future, info: ClientCallInfo) -> None:
        future.rawlink(lambda done: info._settle(done.exception, done.value))

    def _wait(self, future: Future, info: ClientCallInfo) -> Any:
        try:
            value = future.get()
        except BaseException as exc:
            info._settle(exc)
            raise
        info._settle(None, value)
        return value

    # -- events from the server -------------------------------------------------
    def _on_frames(self, frames: List[Any]) -> None:
        routed = self._session.receive(frames[-1], time.monotonic())
        if routed is None:
            return
        kind, call, value = routed
        if kind is ITEM:
            self._stream_of(call).push(value)
        elif kind is RESULT:
            self._stop_timer(call)
            call.future.set(value)
        elif kind is END:
            self._stream_of(call).push(_END)
        else:
            self._stop_timer(call)
            self._fail_result(call, value)

    def _stream_of(self, call: ClientCall) -> _StreamState:
        state = call.stream
        if state is None:
            state = call.stream = _StreamState(self, call)
            self._stop_timer(call)  # from now on, the timeout applies between items
            call.future.set(Stream(state))
            # Only the caller may keep the Stream alive: dropping it must cancel the stream.
            call.future = None
        return state

    @staticmethod
    def _stop_timer(call: ClientCall) -> None:
        timer, call.timer = call.timer, None
        if timer is not None:
            timer.close()

    def _fail_result(self, call: ClientCall, exc: BaseException) -> None:
        if call.stream is not None:
            call.stream.fail(exc)
        elif call.future is not None and not call.future.ready():
            call.future.set_exception(exc)

    def _fail(self, call: ClientCall, exc: BaseException) -> None:
        self._session.finish(call)
        self._stop_timer(call)
        self._fail_result(call, exc)

    def _expire(self, call: ClientCall) -> None:
        call.timer = None
        expired = self._session.expire(call)
        if expired is None:
            return
        exc, cancel = expired
        self._fail_result(call, exc)
        self._send_nowait(call, cancel)

    def _abandon(self, call: ClientCall) -> None:
        cancel = self._session.abandon(call)
        if cancel is not None:
            self._stop_timer(call)
            self._send_nowait(call, cancel)

    def _grant(self, call: ClientCall) -> None:
        """Send the credit due to a stream's server, waiting (within the call's timeout) for room."""
        due = self._session.grant(call)
        if due is None:
            return
        amount, payload = due
        timeout = call.timeout
        try:
            call.transport.send(self._frames(call, payload),
                                None if timeout is None else time.monotonic() + timeout, timeout)
        except ClosedError:
            return
        except TimeoutExpired as exc:
            # The server takes nothing from us: without credit it never sends again.
            self._fail(call, exc)
            return
        call.window.sent(amount)
        call.last_sent = time.monotonic()

class Batch(CallQueue):
    """Calls queued, then sent together: all in flight at once, results in order.

    ``batch.add(1, 2)`` or ``batch.call("add", 1, 2)`` queue a call and
    return its index; ``batch.run()`` sends them all and returns their
    results in order, a failed call's exception standing in its slot. Works
    against zerorpc servers too: it is only pipelining.
    """

    def __init__(self, caller: _Caller) -> None:
        super().__init__()
        self._caller = caller

    def run(self) -> List[Any]:
        """Send every queued call, wait for all, and return results (or exceptions) in order."""
        futures = []
        for method, args, kwargs in self._take():
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
