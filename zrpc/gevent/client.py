"""The gevent client: a DEALER socket per server, multiplexing every call of every greenlet.

Requests are built and replies routed by
:class:`zrpc.core.client_session.ClientSession`; this module owns what a
caller waits on: a future per call, one hub timer for its timeout (none
for heartbeats: one greenlet pings all open calls), and, for streams, a
bounded buffer that grants credit as the reader consumes.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import gevent
import zmq
from gevent.event import AsyncResult, Event

from ..core.calling import CallQueue, Caller, OptionsView
from ..core.balancing import ResolvedName
from ..core.client_session import ClientCall
from ..core.errors import AuthenticationFailed, ClosedError, TimeoutExpired, TooManyServers
from ..core.intercept import ClientCallInfo, Interceptor
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from ..nodes import END_OF_STREAM, ClientBase, Resolver, StreamBuffer, StreamHandle
from .node import Node
from .transport import Transport

__all__ = ["Client", "Future", "Stream", "Batch"]

log = logging.getLogger("zrpc.client")

#: A call's result to come: gevent's AsyncResult (``get``, ``ready``, ``wait``,
#: ``exception``...), usable with ``gevent.wait`` and ``gevent.joinall``.
Future = AsyncResult

class _StreamState(StreamBuffer):
    """A stream's buffer (see :class:`zrpc.nodes.StreamBuffer`); the reader waits on an Event."""

    __slots__ = ("ready",)

    def __init__(self, client: "Client", call: ClientCall) -> None:
        super().__init__(client, call)
        self.ready = Event()

    def _wake(self) -> None:
        self.ready.set()

    def next(self) -> Any:
        if self.done:
            raise StopIteration
        while not self.items:
            self.ready.clear()
            if not self.ready.wait(self.call.timeout):
                raise self._timed_out()
        item = self._take()
        if item is END_OF_STREAM:
            raise StopIteration
        self.client._grant(self.call)
        return item


class Stream(StreamHandle):
    """The items of a streamed result, as they arrive. Iterate it; close it (or break) to stop early.

    Waiting for each item is bounded by the call's timeout; heartbeats keep
    a quiet stream alive in between. Closing an unfinished stream, or
    dropping it, tells a zrpc server to stop its generator at once.
    """

    __slots__ = ()

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        return self._state.next()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()



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


class _Options(OptionsView, _Caller):
    pass


class Client(_Caller, ClientBase, Node):
    """Call a zrpc or zerorpc server: ``client.add(1, 2)``, ``client.call("add", 1, 2)``.

    ``endpoint`` is one endpoint or a list: each new call goes to the
    server that is up with the fewest calls in flight, and every later
    event of that call (heartbeats, stream credit, cancel) follows it to
    the same server. A server that stops answering is taken out of the
    rotation and probed back in; a call refused with ServerStopping is
    sent to another server at once. A ``tcp://NAME:PORT`` endpoint makes
    every address NAME resolves to a server, resolved again every
    ``dns_refresh`` seconds (None: only at connect) with ``resolver``
    (``socket.getaddrinfo``'s signature and records; None hands names to
    zmq unresolved).
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
        passive_heartbeat: bool = False,
        dns_refresh: Optional[float] = 30.0,
        resolver: Optional[Resolver] = socket.getaddrinfo,
        headers: Optional[Mapping[str, Any]] = None,
        interceptors: Iterable[Interceptor] = (),
        inherit_deadline: bool = True,
    ) -> None:
        if passive_heartbeat:
            # zerorpc code passes it; zrpc's heartbeats already work against passive peers.
            log.debug("passive_heartbeat=True ignored: zrpc always sends heartbeats")
        self._hub_loop = gevent.get_hub().loop
        self._init_client(endpoint, timeout=timeout, heartbeat=heartbeat, stream_window=stream_window,
                          max_message_size=max_message_size, context=context, socket_options=socket_options,
                          trace=trace, curve_server_key=curve_server_key, curve_secret_key=curve_secret_key,
                          dns_refresh=dns_refresh, resolver=resolver,
                          headers=headers, interceptors=interceptors, inherit_deadline=inherit_deadline)

    def close(self) -> None:
        """Fail calls in flight with ClosedError, tell their servers to cancel them, and release the sockets.

        Cancels already queued are flushed for at most ``CLOSE_LINGER`` seconds.
        """
        if self.closed:
            return
        self._close_calls()
        self._close_io()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- starting a call ------------------------------------------------------
    def _start(self, method: str, args: Sequence[Any], kwargs: Dict[str, Any],
               timeout: Optional[float], headers: Optional[Dict[str, Any]] = None, async_: bool = False,
               message_id: Optional[bytes] = None) -> Future:
        if isinstance(method, bytes):
            method = method.decode()
        if self.closed:
            raise ClosedError("the client is closed")
        if gevent.get_hub().loop is not self._hub_loop:
            raise RuntimeError(
                "this zrpc.Client belongs to another thread: gevent objects cannot be shared "
                "between threads; make one Client per thread (or call from the thread that made it)")
        start = time.monotonic()
        call, payload = self._session.request(method, args, kwargs, timeout, start, headers, message_id)
        timeout = call.timeout  # at most what remains of the deadline of the call being served
        call.future = future = AsyncResult()
        frames = [b"", payload]
        if self._send_request(call, frames, start):
            self._start_timer(call, start, timeout)
        elif async_:  # call_async returns at once: the waiting for a server goes on in a greenlet
            gevent.spawn(self._send_late, call, frames, start, timeout)
        else:
            self._send_late(call, frames, start, timeout)
        return future

    def _send_late(self, call: ClientCall, frames: List[Any], start: float, timeout: Optional[float]) -> None:
        """No server could take the request at once: wait for one (until the timeout), then send it."""
        future = call.future
        try:
            self._send_request_slowly(call, frames, None if timeout is None else start + timeout)
        except TimeoutExpired:
            future.set_exception(TimeoutExpired(
                timeout, self._session.calling(call.method) + " (no server took it)"))
            return
        except (AuthenticationFailed, TooManyServers, ClosedError) as exc:
            future.set_exception(exc)
            return
        self._start_timer(call, start, timeout)

    def _start_timer(self, call: ClientCall, start: float, timeout: Optional[float]) -> None:
        if timeout is not None:
            call.timer = self._hub_loop.timer(max(start + timeout - call.last_sent, 0.0))
            call.timer.start(self._expire, call)

    def _send_request_slowly(self, call: ClientCall, frames: List[Any], deadline: Optional[float]) -> None:
        """Wait until some socket can take the request, or raise TimeoutExpired at ``deadline``."""
        while True:
            refused = self._refusal()
            if refused is not None:
                raise refused
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutExpired(None)
            # A socket with no live connection would queue the request for a
            # server that may never come: wait for one that is up and has room.
            ready = []
            for transport, room in self._waits():
                transport.changed.clear()  # before looking, so no change is missed
                ready.append(transport.arm_writable() if room else transport.changed)
            if not any(event.is_set() for event in ready):
                gevent.wait(ready or [Event()], timeout=remaining, count=1)
            if self.closed:
                raise ClosedError("the client was closed")
            if self._send_waited(call, frames):
                return

    def _wait(self, future: Future) -> Any:
        return future.get()

    def _settled(self, result: Any, info: ClientCallInfo) -> Any:
        if info.async_ and isinstance(result, Future):
            # rawlink callbacks run in the hub, where a done callback could not do any I/O
            result.rawlink(lambda done: gevent.spawn(info._settle, done.exception, done.value))
        else:
            info._settle(None, result)
        return result

    # -- the waiting behind zrpc.nodes.ClientBase ----------------------------------
    def _refresh(self, name: ResolvedName) -> None:
        gevent.spawn(self._refresh_in_thread, name)

    def _refresh_in_thread(self, name: ResolvedName) -> None:
        # A resolver blocks (socket.getaddrinfo does): in a thread, so the hub runs on.
        self._resolved(name, gevent.get_hub().threadpool.apply(self._lookup, (name,)))

    def _settle(self, call: ClientCall, value: Any) -> None:
        timer, call.timer = call.timer, None  # _stop_timer, inline: this is every call's path
        if timer is not None:
            timer.close()
        call.future.set(value)

    @staticmethod
    def _resolve(future: Optional[Future], value: Any) -> bool:
        if future is None or future.ready():
            return False
        future.set(value)
        return True

    @staticmethod
    def _cancel_timer(timer: Any) -> None:
        timer.close()

    @staticmethod
    def _reject(future: Optional[Future], exc: BaseException) -> None:
        if future is not None and not future.ready():
            future.set_exception(exc)

    def _grant(self, call: ClientCall) -> None:
        """Send the credit due to a stream's server, waiting (within the call's timeout) for room."""
        due = self._grant_due(call)
        if due is not None:
            try:
                self._send(call, due[1], due[2], call.timeout)
            except (ClosedError, TimeoutExpired) as exc:
                self._grant_failed(call, exc)
            else:
                call.window.sent(due[0])

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


_Caller._batch_class = Batch
