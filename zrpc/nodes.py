"""What every driver's Client and Server share, whatever the event loop: a session, sockets, endpoints.

``zrpc.gevent`` and ``zrpc.aio`` each subclass these with what only they
do: waiting, tasks or greenlets, timers, closing. Nothing here waits, sleeps
or registers with an event loop; a subclass provides ``_new_transport()``,
which makes one of its transports (a :class:`zrpc.sockets.SocketCore`).
"""
from __future__ import annotations

import logging
import socket
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import zmq

from .core.balancing import Backend, ResolvedName, addresses_of, split_tcp_endpoint, tcp_endpoint
from .core.client_session import END, ITEM, RESULT, RETRY, ClientCall, ClientSession
from .core.errors import AuthenticationFailed, ClosedError, ServerStopping, TimeoutExpired, TooManyServers, ZrpcError
from .core.intercept import _CURRENT, ClientCallInfo, Interceptor, run_chain, validate_headers
from .core.methods import MethodTable
from .core.routing import ForwardedCaller
from .core.server_session import (
    CANCEL,
    CREDIT,
    DEADLINE_PASSED,
    QUEUED,
    SEND,
    SERVER_STOPPED,
    START,
    Cancellation,
    ServerCall,
    ServerSession,
)
from .core.session import Session, Tracer
from .security import ClientGuard, ServerGuard
from .sockets import PeerUnreachable, SocketCore

__all__ = ["NodeBase", "ClientBase", "ServerBase", "StreamBuffer", "StreamHandle", "END_OF_STREAM", "UNSET"]

log = logging.getLogger("zrpc.server")
client_log = logging.getLogger("zrpc.client")

#: ERRs sent outside any call that the socket could not take at once wait for room
#: this long, in a greenlet or task of their own, before they are dropped with a log line.
REJECT_WAIT = 5.0
MAX_PENDING_REJECTS = 1024

#: "Not given" for call options, so that None can mean "wait forever".
UNSET: Any = object()
#: ``resolver(host, port, family, type)``: ``socket.getaddrinfo``'s contract (records whose [4][0] is an address).
Resolver = Callable[[str, int, int, int], Any]
#: What :meth:`StreamBuffer._take` returns once a stream has ended.
END_OF_STREAM: Any = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class StreamBuffer:
    """A stream's items as they arrive, reached by the client through its call.

    Kept apart from the user's Stream handle, so that dropping the handle
    (``break``) lets it be collected and cancel the server's generator. A
    driver adds only the waiting: ``_wake()``, and a ``next`` that waits
    while ``items`` is empty, then returns what :meth:`_take` gives.
    """

    __slots__ = ("client", "call", "items", "done")

    def __init__(self, client: "ClientBase", call: ClientCall) -> None:
        self.client = client
        self.call = call
        self.items: Deque[Any] = deque()
        self.done = False

    def _wake(self) -> None:
        """Wake the reader waiting for an item, if any."""
        raise NotImplementedError

    def push(self, item: Any) -> None:
        self.items.append(item)
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.push(_Failure(exc))

    def _take(self) -> Any:
        """The next item (``items`` is not empty), or END_OF_STREAM; raises the stream's failure."""
        item = self.items.popleft()
        if item is END_OF_STREAM:
            self.done = True
        elif isinstance(item, _Failure):
            self.done = True
            raise item.exc
        else:
            self.call.window.taken()
        return item

    def _timed_out(self) -> TimeoutExpired:
        """Close the stream: no item came within the call's timeout; the error to raise."""
        self.close()
        call = self.call
        return TimeoutExpired(call.timeout, f"waiting for the next item of {call.method}()")

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.items.clear()
            self.client._abandon(self.call)


class StreamHandle:
    """What the user holds of a stream: a driver adds iterating (``__next__`` or ``__anext__``).

    Closing an unfinished stream, or dropping it, tells a zrpc server to stop its generator at once.
    """

    __slots__ = ("_state",)

    def __init__(self, state: StreamBuffer) -> None:
        self._state = state

    def close(self) -> None:
        """Stop receiving; an unfinished stream is cancelled on the server. Idempotent."""
        self._state.close()

    def __del__(self) -> None:
        try:
            self._state.close()
        except Exception:
            pass


class NodeBase:
    """A session and its sockets: the part of a Client or Server that no event loop touches.

    A driver implements ``_make_transport`` (one of its sockets),
    ``_spawn_heartbeats``/``_stop_heartbeats`` (a greenlet or task calling
    :meth:`_beat` every tick) and ``_call_soon`` (run a callback on its loop
    soon, outside the current stack).
    """

    _socket_type: int = zmq.DEALER
    _session: Session
    #: What the user made ("Client", "Server"), for messages.
    _kind = "Node"
    #: Seconds zmq may still spend delivering replies and cancels already
    #: queued when a node closes; close() waits for them at most this long.
    CLOSE_LINGER = 0.5

    def _init_node(self, session: Session, context: Optional[zmq.Context],
                   socket_options: Optional[Mapping[int, Any]]) -> None:
        self._session = session
        # A context of our own can be terminated on close, which is what
        # flushes queued replies before the process may exit.
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket_options = dict(socket_options or {})
        #: Called with every new socket before it binds or connects (security hooks in here).
        self._socket_setups: List[Callable[[zmq.Socket], None]] = []
        self._transports: List[Any] = []
        self._started = False
        self._closed = False
        self._heartbeats: Any = None

    # -- the driver's part ----------------------------------------------------------
    def _make_transport(self, track_connections: bool) -> SocketCore:
        raise NotImplementedError

    def _spawn_heartbeats(self) -> Any:
        raise NotImplementedError

    def _stop_heartbeats(self, heartbeats: Any) -> None:
        raise NotImplementedError

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        raise NotImplementedError

    # -- life cycle -------------------------------------------------------------------
    def _new_transport(self) -> Any:
        """One more socket of this node, reading already if the node is started."""
        if self._closed:
            raise ClosedError(f"the {self._kind.lower()} is closed")
        transport = self._make_transport(self._socket_type == zmq.DEALER)
        self._transports.append(transport)
        if self._started:
            transport.start()
        return transport

    def _start_io(self) -> None:
        """Start reading every socket, and the heartbeats."""
        self._started = True
        for transport in self._transports:
            transport.start()
        if self._session.tick and self._heartbeats is None and not self._closed:
            self._heartbeats = self._spawn_heartbeats()

    def _close_sockets(self) -> None:
        """Stop the heartbeats and close every socket; zmq flushes their queues for CLOSE_LINGER."""
        self._closed = True
        heartbeats, self._heartbeats = self._heartbeats, None
        if heartbeats is not None:
            self._stop_heartbeats(heartbeats)
        for transport in self._transports:
            transport.close(self.CLOSE_LINGER)

    # -- for the driver and its Client/Server ---------------------------------------
    def _send_nowait(self, channel: Any, payload: bytes) -> bool:
        """Send a control event if the socket can take it now; never waits.

        False if it could not go: the socket is full or closed, or the peer
        is gone (then the channel is failed as lost, soon).
        """
        try:
            return self._transport_of(channel).try_send(self._frames(channel, payload))
        except PeerUnreachable:
            self._call_soon(self._on_unreachable, channel)
        except ClosedError:
            pass  # closing: the channel is going away anyway
        return False

    def _on_unreachable(self, channel: Any) -> None:
        """The socket says the channel's peer is gone; treat it as lost."""
        self._session.table.discard(channel)
        self._on_lost(channel)

    def _frames(self, channel: Any, payload: bytes) -> List[Any]:
        """The frames that carry ``payload`` on ``channel`` (with its envelope)."""
        raise NotImplementedError

    def _transport_of(self, channel: Any) -> Any:
        """The socket a channel's events travel on."""
        raise NotImplementedError

    def _on_frames(self, frames: List[Any]) -> None:
        raise NotImplementedError

    def _on_lost(self, channel: Any) -> None:
        raise NotImplementedError

    def _beat(self, now: float) -> None:
        """One heartbeat sweep: send the pings due (those the socket takes count), fail the lost channels."""
        session = self._session
        pings, lost = session.heartbeats(now)
        for channel, payload in pings:
            if self._send_nowait(channel, payload):
                session.pinged(channel, now)
        for channel in lost:
            self._on_lost(channel)

    def _setup_socket(self, sock: zmq.Socket) -> None:
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)
        for setup in self._socket_setups:
            setup(sock)

    @property
    def heartbeat(self) -> Optional[float]:
        return self._session.heartbeat

    @property
    def max_message_size(self) -> Optional[int]:
        return self._session.max_message_size

    @property
    def endpoints(self) -> List[str]:
        """Every endpoint bound or connected, in order."""
        return [ep for transport in self._transports for ep in transport.endpoints]

    @property
    def closed(self) -> bool:
        return self._closed


#: A request sent this long (s) after it was made gets its ``zrpc_timeout`` rewritten to what is left.
_LATE = 0.01


class ServerBase(NodeBase):
    """The loop-free part of a Server: one ROUTER for every endpoint, and what each message means.

    A driver implements the waiting behind a few hooks: ``_launch`` (run a
    call in a greenlet or task), ``_interrupt_call`` (stop a running call),
    ``_wake`` (a call waiting for credit may go on), ``_send_reject_later``
    (an ERR the socket could not take now), and its ``_event_class``.
    """

    _socket_type = zmq.ROUTER
    _kind = "Server"
    _session: ServerSession
    _transport: SocketCore
    _guard: Optional[ServerGuard]
    #: The driver's Event (set, clear, wait) for ``_idle`` and ``_stopped``.
    _event_class: Callable[[], Any]
    #: A worker of ``zrpc serve --workers``: its only peer is the router, which names each caller in
    #: the envelope (see zrpc.core.routing). Never set on a server that clients reach directly.
    _behind_router = False

    def _init_server(self, methods: Any, name: Optional[str], *, exclude_from: type,
                     heartbeat: Optional[float], pool_size: Optional[int], max_pending: Optional[int],
                     send_tracebacks: bool, stream_generators: bool, max_message_size: Optional[int],
                     context: Optional[zmq.Context], socket_options: Optional[Mapping[int, Any]],
                     trace: Optional[Tracer], curve_secret_key: Any, curve_clients: Any,
                     allow_ips: Optional[Iterable[str]], deny_ips: Optional[Iterable[str]],
                     zap_driver: Any, interceptors: Iterable[Interceptor] = ()) -> None:
        """What every driver's Server constructor does with its options (see zrpc.Server).

        ``exclude_from`` is the driver's Server class: when the methods are
        a subclass's own, the server's methods are not served.
        """
        if methods is None:
            methods = self  # subclass style: class MyService(zrpc.Server)
        exclude = set(dir(exclude_from)) if methods is self else None
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
        self._init_node(session, context, socket_options)
        self._session = session
        self._interceptors = list(interceptors)
        self._guard = ServerGuard.create(zap_driver, self._context, curve_secret_key, curve_clients,
                                         allow_ips, deny_ips)
        if self._guard is not None:
            self._socket_setups.append(self._guard.setup)
        # One ROUTER for every endpoint: it routes each reply by the caller's identity.
        self._transport = self._new_transport()
        self._pending_rejects = 0
        self._stopped = self._event_class()
        self._idle = self._event_class()
        self._idle.set()
    #: Server interceptors, outermost first (empty: the serve path runs none of their code).
    _interceptors: List[Interceptor]

    @property
    def interceptors(self) -> List[Interceptor]:
        """The server's interceptors, outermost first (see the README's "Interceptors")."""
        return list(self._interceptors)

    @property
    def stats(self) -> Dict[str, int]:
        """Counters and gauges for observers (zrpc.metrics): calls running and queued, bad messages,
        callers lost (no heartbeat), calls refused because the queue was full, calls cancelled
        before they started (by their caller, their deadline or a stop; interceptors never saw them)."""
        session = self._session
        return {"running": session.running, "queued": session.queued, "bad_messages": session.bad_messages,
                "callers_lost": session.callers_lost, "refused_busy": session.refused_busy,
                "cancelled_queued": session.cancelled_queued}

    def _intercepted(self, call: ServerCall, name: str, args: Any, kwargs: Dict[str, Any],
                     invoke: Callable[[Any, Dict[str, Any]], Any]) -> Any:
        """Run the interceptors around ``invoke(args, kwargs)`` (the method, as the driver runs it)."""
        info = call.make_info()
        info.method, info.args, info.kwargs = name, tuple(args), kwargs
        return run_chain(self._interceptors, info, lambda: invoke(info.args, info.kwargs))

    @staticmethod
    def _over(call: ServerCall, outcome: str, error: Optional[BaseException], result: Any) -> None:
        """The call is over: tell its done callbacks, if anyone (an interceptor, current_call()) made its CallInfo."""
        info = call.info
        if info is not None:
            info.reply_bytes = call.reply_bytes
            info._finish(outcome, error, result)

    def _beat(self, now: float) -> None:
        """Heartbeats, then cancel the calls whose deadline passed (their callers stopped waiting)."""
        super()._beat(now)
        for call in self._session.overdue(now):
            self._cancel(call, DEADLINE_PASSED)

    @property
    def name(self) -> str:
        """The service name (``_zerorpc_name``)."""
        return self._session.methods.name

    @property
    def pool_size(self) -> Optional[int]:
        return self._session.pool_size

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` (or ``close()``) was called: new calls are refused."""
        return self._session.stopping

    @property
    def calls_in_flight(self) -> int:
        """Calls running or waiting in line."""
        return self._session.calls_in_flight

    def _stopped_from_inside(self) -> bool:
        """True if ``stop()`` is called by one of this server's own calls, which must not wait for
        itself (``def shutdown(self): server.stop()``): its reply is sent after stop() returns."""
        call = _CURRENT.get(None)
        return call is not None and call.running and self._session.table.get(call.key) is call

    def start(self) -> Any:
        """Serve in the background of the current hub or running loop; returns the server at once."""
        if self._session.stopping:
            raise RuntimeError("a stopped server cannot be started again; make a new one")
        self._start_io()
        return self

    # -- the driver's waiting ---------------------------------------------------------
    def _launch(self, call: ServerCall) -> None:
        raise NotImplementedError

    def _interrupt_call(self, call: ServerCall, why: Cancellation) -> None:
        """Stop the call's greenlet or task, unless it is the one running now."""
        raise NotImplementedError

    @staticmethod
    def _wake(waiter: Any) -> None:
        """A call waiting for credit (``call.credit_ready``) may go on."""
        raise NotImplementedError

    def _send_reject_later(self, frames: List[Any]) -> None:
        """Send ``frames`` in a greenlet or task, waiting up to REJECT_WAIT for room, then
        call :meth:`_reject_sent`."""
        raise NotImplementedError

    # -- what each message means -------------------------------------------------------
    def _on_frames(self, frames: List[Any]) -> None:
        action = self._session.receive(frames, monotonic())
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
                self._wake(ready)
        elif kind is CANCEL:
            self._cancel(action[1], action[2])
        elif kind is SEND:
            self._send_reject(action[1])

    def _send_reject(self, frames: List[Any]) -> None:
        """Send an ERR outside any call without waiting; if the socket is full, send it later (bounded)."""
        try:
            if self._transport.try_send(frames):
                return
        except (PeerUnreachable, ClosedError):
            return  # the caller is gone: nobody to tell
        if self._pending_rejects >= MAX_PENDING_REJECTS:
            log.warning("dropped an ERR reply: %d already wait for a full socket", self._pending_rejects)
            return
        self._pending_rejects += 1
        self._send_reject_later(frames)

    def _reject_sent(self, exc: Optional[BaseException]) -> None:
        """A later ERR went out, or failed with ``exc``."""
        self._pending_rejects -= 1
        if exc is not None and not isinstance(exc, (PeerUnreachable, ClosedError)):
            log.warning("dropped an ERR reply: %s", exc)  # TimeoutExpired: the peer takes nothing

    def _cancel(self, call: ServerCall, why: Cancellation) -> None:
        interrupt, answer = self._session.cancel(call, why)
        if answer is not None:
            self._send_reject(answer[1])
        if call.waiting:  # a queued call: the server may be idle now
            if self._session.idle:
                self._idle.set()
        elif interrupt:
            self._interrupt_call(call, why)
        # a task spawned but not yet running sees call.cancelled when it starts

    def _cancel_open_calls(self) -> None:
        """Stopping, and calls in flight did not finish in time: cancel them all."""
        for call in self._session.open_calls():
            self._cancel(call, SERVER_STOPPED)

    def _close_guard(self) -> None:
        if self._guard is not None:
            self._guard.close()  # before the context is terminated: the ZAP socket lives on it

    def _on_lost(self, call: Any) -> None:
        self._cancel(call, self._session.lost(call))

    def _frames(self, channel: Any, payload: bytes) -> List[Any]:
        return [*channel.envelope, payload]

    def _transport_of(self, channel: Any) -> Any:
        return self._transport

    def _admit(self, call: ServerCall) -> bool:
        """A new call (running or queued) from the message being read: note its caller, or refuse it."""
        frame = self._transport.frame
        if self._guard is not None and self._guard.revoked(frame):
            self._refuse(call, "AuthenticationFailed", "this client's key is no longer admitted by the server")
            return False
        # its metadata (Peer-Address, User-Id) for current_call(); a worker's comes from its router
        call.connection = ForwardedCaller.of(call.envelope) if self._behind_router else frame
        return True

    def _refuse(self, call: ServerCall, name: str, message: str) -> None:
        """Answer a call that was accepted but must not run, with ERR ``name``."""
        self._session.cancel(call, Cancellation(message), refused=True)
        if not call.waiting:
            for ready in self._session.finished(call):
                self._launch(ready)
        self._send_reject(self._session.reject(call.envelope, call.channel_id, name, message)[1])

    def bind(self, endpoint: str) -> str:
        """Listen on ``endpoint`` (tcp://host:port, ipc://path); ``tcp://127.0.0.1:*`` picks a port.

        Returns the endpoint actually bound. May be called several times.
        """
        return self._transport.bind(endpoint)

    def connect(self, endpoint: str) -> str:
        """Connect to a client that binds (reverse direction); may be called several times."""
        return self._transport.connect(endpoint)


class ClientBase(NodeBase):
    """The loop-free part of a Client: a socket per server, the choice between them, DNS names,
    call options, and what each reply means for its caller.

    A driver implements the waiting behind a few hooks: ``_settle`` (stop a
    call's timer and give its future the result: the hot path), ``_resolve``
    and ``_reject`` (a future's result or error, unless it has one),
    ``_stop_timer``, ``_refresh`` (resolve a DNS name off the loop), and its
    ``_stream_state`` (a :class:`StreamBuffer`) and ``_stream_handle`` (the
    user's Stream) classes.
    """

    _kind = "Client"
    _session: ClientSession
    _timeout: Optional[float]
    _guard: ClientGuard
    #: The driver's view class for ``with_options``: ``_options_class(client, timeout, headers)``.
    _options_class: Callable[..., Any]
    _stream_state: Callable[["ClientBase", ClientCall], StreamBuffer]
    _stream_handle: Callable[[StreamBuffer], Any]
    #: Client interceptors, outermost first (empty: calls run none of their code).
    _interceptors: List[Interceptor] = []
    _headers: Optional[Dict[str, Any]] = None
    #: Resolves ``tcp://NAME:PORT`` endpoints (None: hand names to zmq as they are).
    _resolver: Optional[Resolver] = socket.getaddrinfo
    #: Seconds between re-resolutions of each name (None: resolve once, at connect).
    _dns_refresh: Optional[float] = 30.0

    def _init_client(self, endpoint: Union[str, Sequence[str], None], *, timeout: Optional[float],
                     heartbeat: Optional[float], stream_window: int, max_message_size: Optional[int],
                     context: Optional[zmq.Context], socket_options: Optional[Mapping[int, Any]],
                     trace: Optional[Tracer], curve_server_key: Any, curve_secret_key: Any,
                     dns_refresh: Optional[float], resolver: Optional[Resolver],

                     headers: Optional[Mapping[str, Any]] = None, interceptors: Iterable[Interceptor] = (),
                     inherit_deadline: bool = True) -> None:
        """What every driver's Client constructor does with its options (see zrpc.Client)."""
        session = ClientSession(heartbeat=heartbeat, stream_window=stream_window,
                                max_message_size=max_message_size, trace=trace, inherit_deadline=inherit_deadline)
        self._init_node(session, context, socket_options)
        self._session = session
        self._headers = validate_headers(headers)  # before any socket: a bad header is a plain error
        self._interceptors = list(interceptors)
        self._guard = ClientGuard(curve_server_key, curve_secret_key, self._on_handshake_failed)
        self._socket_setups.append(self._guard.setup)
        self._client = self
        self._timeout = timeout
        self._dns_refresh = dns_refresh
        self._resolver = resolver
        if isinstance(endpoint, str):
            endpoint = [endpoint]
        for ep in endpoint or ():
            self.connect(ep)
        self._start_io()

    def _intercepted(self, method: str, args: Any, kwargs: Dict[str, Any], timeout: Optional[float],
                     headers: Optional[Dict[str, Any]], async_: bool) -> Any:
        """Make a call through the interceptors: what the caller gets (value, or the future if ``async_``)."""
        return self._run_chain(ClientCallInfo(method, args, kwargs, headers, timeout, async_))

    # -- interceptors ----------------------------------------------------------------
    def _run_chain(self, info: ClientCallInfo) -> Any:
        def send() -> Any:
            headers = validate_headers(info.headers)
            if info._wire_headers:
                headers = {**info._wire_headers, **headers} if headers else info._wire_headers
            message_id, info._message_id = info._message_id, None  # one request only: a retry draws anew
            future = self._start(info.method, info.args, info.kwargs, info.timeout, headers,
                                 async_=info.async_, message_id=message_id)
            return future if info.async_ else self._wait(future)

        try:
            result = run_chain(self._interceptors, info, send)
        except BaseException as exc:
            info._settle(exc)
            raise
        # The outcome is what the whole chain gave (an interceptor may retry, or map an error), not
        # what the first send() saw.
        return self._settled(result, info)

    def _settled(self, result: Any, info: ClientCallInfo) -> Any:
        """What the caller gets from the chain's ``result``, settling ``info`` once it is known."""
        raise NotImplementedError

    def _start(self, method: str, args: Any, kwargs: Dict[str, Any], timeout: Optional[float],
               headers: Optional[Dict[str, Any]] = None, async_: bool = False,
               message_id: Optional[bytes] = None) -> Any:
        """Make the call: build its request (with ``message_id`` if given) and send it or queue it;
        return the driver's future at once (``async_``) or once a server took it."""
        raise NotImplementedError

    def _wait(self, future: Any) -> Any:
        """What a plain call's send() returns: the result (on asyncio, the awaitable future)."""
        raise NotImplementedError

    # -- the driver's waiting -------------------------------------------------------
    def _settle(self, call: ClientCall, value: Any) -> None:
        """A result came: stop the call's timer and give its future the value."""
        raise NotImplementedError

    def _resolve(self, future: Any, value: Any) -> bool:
        """Give ``future`` its result if nobody did (nor cancelled it); False if it was not wanted."""
        raise NotImplementedError

    def _reject(self, future: Any, exc: BaseException) -> None:
        """Fail ``future`` (may be None) with ``exc``, unless it already has a result."""
        raise NotImplementedError

    @staticmethod
    def _cancel_timer(timer: Any) -> None:
        """Stop a timer the driver started for a call's timeout."""
        raise NotImplementedError

    def _stop_timer(self, call: ClientCall) -> None:
        timer, call.timer = call.timer, None
        if timer is not None:
            self._cancel_timer(timer)

    # -- what the server's events mean for the caller ------------------------------
    def _on_frames(self, frames: List[Any]) -> None:
        routed = self._session.receive(frames[-1], monotonic())
        if routed is None:
            return
        kind, call, value = routed
        if kind is RESULT:  # first: the usual case
            self._settle(call, value)
        elif kind is ITEM:
            self._stream_of(call).push(value)
        elif kind is END:
            self._stream_of(call).push(END_OF_STREAM)
        elif kind is RETRY:
            self._resend(call, value)
        else:
            self._stop_timer(call)
            self._fail_result(call, value)

    def _stream_of(self, call: ClientCall) -> StreamBuffer:
        state = call.stream
        if state is None:
            state = call.stream = self._stream_state(self, call)
            self._stop_timer(call)  # from now on, the timeout applies between items
            # Only the caller may keep the Stream alive: dropping it must cancel the stream.
            future, call.future = call.future, None
            if not self._resolve(future, self._stream_handle(state)):
                state.close()  # nobody wants it any more
        return state

    def _fail_result(self, call: ClientCall, exc: BaseException) -> None:
        if call.stream is not None:
            call.stream.fail(exc)
        else:
            self._reject(call.future, exc)

    def _fail(self, call: ClientCall, exc: BaseException) -> None:
        self._session.finish(call)
        self._stop_timer(call)
        self._fail_result(call, exc)

    def _expire(self, call: ClientCall) -> None:
        """The call's timer ran out: fail it, and tell its server to stop the work."""
        call.timer = None
        expired = self._session.expire(call)
        if expired is None:
            if call.transport is None:  # never sent: no server took it in time
                self._fail_result(call, TimeoutExpired(
                    call.timeout, self._session.calling(call.method) + " (no server took it)"))
            return
        exc, cancel = expired
        self._fail_result(call, exc)
        self._send_nowait(call, cancel)

    def _abandon(self, call: ClientCall) -> None:
        """The caller gave up (cancelled, closed the stream): tell the server to stop."""
        self._stop_timer(call)
        cancel = self._session.abandon(call)
        if cancel is not None:
            self._send_nowait(call, cancel)

    def _grant_due(self, call: ClientCall) -> Optional[Tuple[int, bytes, Optional[float]]]:
        """The stream credit due to the call's server: (amount, payload, deadline to send it by), or None."""
        due = self._session.grant(call)
        if due is None:
            return None
        timeout = call.timeout
        return due[0], due[1], None if timeout is None else monotonic() + timeout

    def _grant_failed(self, call: ClientCall, exc: BaseException) -> None:
        """Credit could not be sent: closing (nothing to do), or the server takes nothing
        (TimeoutExpired): fail the call, since without credit it never sends again."""
        if isinstance(exc, TimeoutExpired):
            self._fail(call, exc)

    def _close_calls(self) -> None:
        """Closing: fail every call in flight with ClosedError, and tell their servers to cancel them."""
        session = self._session
        for call in session.open_calls():
            cancel = session.abandon(call)
            self._fail(call, ClosedError("the client was closed"))
            if cancel is not None:
                self._send_nowait(call, cancel)  # the server stops the work now
        self._guard.close()

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout

    @property
    def stream_window(self) -> int:
        return self._session.stream_window

    def _client_transport(self) -> Any:
        """A new socket for one more endpoint: its calls fail at once when its connection drops
        or its security handshake fails."""
        transport = self._new_transport()
        transport.on_all_disconnected = lambda: self._on_disconnected(transport)
        transport.on_connected = lambda: self._on_connected(transport)
        transport.on_event = self._guard.watch(transport.socket)
        return transport

    def _on_connected(self, transport: Any) -> None:
        """A connection came up on ``transport``: its server, if ejected, gets a clean slate."""
        for backend in self._session.balancer.backends:
            if backend.transport is transport:
                self._session.balancer.connected(backend)

    def _on_handshake_failed(self, sock: zmq.Socket, exc: AuthenticationFailed) -> None:
        """A handshake on ``sock`` failed: fail the calls that went to it, wake the calls waiting to send."""
        for call in self._session.open_calls():
            if call.transport is not None and call.transport.socket is sock:
                self._fail(call, exc)
        for transport in self._transports:
            if transport.socket is sock:
                transport.wake_senders()

    def _refusal(self) -> Optional[ZrpcError]:
        """The error to raise if no server can ever take a call now (waiting cannot help).

        Every server refused this client's handshake, or several servers
        share each endpoint this client bound.
        """
        failures = [self._guard.failure(transport.socket) or self._crowding(transport)
                    for transport in self._transports]
        if failures and all(failures):
            first = failures[0]
            return type(first)(str(first))
        return None

    @staticmethod
    def _crowding(transport: Any) -> Optional[TooManyServers]:
        """The error of calls on a bound socket that several servers connected to, if so."""
        if transport.bound_peer_limit and transport.connections > 1:
            return TooManyServers(
                f"{transport.connections} servers are connected to {', '.join(transport.endpoints)}, "
                "which this client bound: it cannot tell them apart (each would get the heartbeats, "
                "stream credit and cancels of the others' calls). Bind one endpoint per server, or "
                "connect the client to the servers")
        return None

    def _on_crowded(self, transport: Any) -> None:
        """A second server connected to a socket this client bound: fail its calls clearly, now."""
        exc = self._crowding(transport)
        if exc is None:
            return
        client_log.error("%s; calls on it fail with TooManyServers until one server is left", exc)
        for call in self._session.open_calls():
            if call.transport is transport:
                self._fail(call, exc)

    def _frames(self, channel: Any, payload: bytes) -> List[Any]:
        return [b"", payload]  # a DEALER's message: the empty delimiter, then the payload

    def _transport_of(self, channel: Any) -> Any:
        return channel.transport  # the socket the call went out on

    def _on_lost(self, call: Any) -> None:
        self._fail(call, self._session.lost(call))

    def _on_disconnected(self, transport: Any) -> None:
        """libzmq saw the connection drop: its calls cannot be answered any more, fail them now."""
        transport.drain()  # replies that arrived just before the drop still count
        session = self._session
        for call in session.open_calls():
            if call.transport is transport:
                self._fail(call, session.disconnected(call, transport.endpoints))

    def _add_server(self, endpoint: str, bind: bool = False) -> Backend:
        """A socket of its own for one more server, in the rotation at once."""
        transport = self._client_transport()
        if bind:
            transport.bound_peer_limit = True
            transport.on_crowded = lambda: self._on_crowded(transport)
            endpoint = transport.bind(endpoint)
        else:
            if endpoint.startswith("tcp://["):
                transport.socket.setsockopt(zmq.IPV6, 1)
            transport.connect(endpoint)
        return self._session.balancer.add(transport, endpoint)

    def connect(self, endpoint: str) -> str:
        """Connect to one more server; each new call goes to the server with the fewest calls in flight.

        Each server gets its own socket, so a call's later events reach the
        server that took it (one shared DEALER would scatter them). A
        ``tcp://NAME:PORT`` endpoint is resolved now and every address
        (A and AAAA) becomes a server; the name is resolved again every
        ``dns_refresh`` seconds, in the background.
        """
        named = split_tcp_endpoint(endpoint) if self._resolver is not None else None
        if named is None:
            self._add_server(endpoint)
        else:
            name = ResolvedName(endpoint, named[0], named[1], self._dns_refresh, monotonic())
            self._session.names.append(name)
            if self._resolve_at_connect:
                self._resolved(name, self._lookup(name))
            else:  # a lookup may block: resolved in the background at once, like every refresh
                name.started(monotonic())
                self._refresh(name)
            if not name.backends:  # not resolved (yet): let zmq keep trying the name meanwhile
                name.backends[name.host] = self._add_server(endpoint)
        self._session.endpoints.append(endpoint)
        return endpoint

    def bind(self, endpoint: str) -> str:
        """Listen for one server that connects (reverse direction); returns the bound endpoint.

        One server per bound endpoint: while a second one is connected too,
        the calls on it fail with TooManyServers (a bound socket cannot tell
        servers apart). Bind several endpoints for several servers.
        """
        bound = self._add_server(endpoint, bind=True).endpoint
        self._session.endpoints.append(bound)
        return bound

    # -- DNS names ----------------------------------------------------------------
    #: True: ``connect()`` resolves a name before it returns (the gevent client: construction may
    #: block briefly, as socket.getaddrinfo does). False: in the background (asyncio: never block the loop).
    _resolve_at_connect = True

    def _lookup(self, name: ResolvedName) -> List[str]:
        """The addresses ``name`` resolves to now ([] if it does not). Touches no state: runs in a thread."""
        resolver = self._resolver
        assert resolver is not None
        try:
            return addresses_of(resolver(name.host, name.port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # socket.gaierror, or whatever a custom resolver raises
            client_log.warning("cannot resolve %s (%s): its servers stay as they are", name.endpoint, exc)
            return []

    def _resolved(self, name: ResolvedName, addresses: List[str]) -> None:
        """``name`` now resolves to ``addresses``: add a server per new one, drain the ones gone."""
        if self._closed:
            return
        added, removed = name.changes(addresses)
        balancer = self._session.balancer
        for backend in removed:
            client_log.info("%s no longer resolves to %s: it takes no new call, and closes once its "
                            "calls are over", name.endpoint, backend.endpoint)
            balancer.remove(backend)
        for address in added:
            name.backends[address] = backend = self._add_server(tcp_endpoint(address, name.port))
            client_log.info("%s resolves to %s: a server in the rotation", name.endpoint, backend.endpoint)

    def _refresh(self, name: ResolvedName) -> None:
        """Run :meth:`_lookup` without blocking the loop, then :meth:`_resolved` with its answer."""
        raise NotImplementedError

    # -- every tick: heartbeats, probes, removed servers, names ---------------------
    def _beat(self, now: float) -> None:
        super()._beat(now)
        session = self._session
        probes, drained, names = session.maintain(now)
        for call, payload in probes:
            transport = call.transport
            try:
                went = bool(transport.connections) and transport.try_send([b"", payload])
            except ClosedError:
                went = False
            if went:
                session.probe_sent(call, now)
        for backend in drained:
            self._transports.remove(backend.transport)
            backend.transport.close(self.CLOSE_LINGER)
        for name in names:
            self._refresh(name)

    def with_options(self, *, timeout: Any = UNSET, headers: Optional[Mapping[str, Any]] = None) -> Any:
        """A view of this client (same connection) whose calls use these options.

        ``client.with_options(timeout=2).add(1, 2)``; ``timeout=None`` waits
        forever. ``headers`` are added to the client's own (validated now:
        str keys, not ``zrpc_*`` nor the protocol's, scalar values, 8 KiB in
        all). The view has ``call``, ``call_async``, ``batch`` and
        attribute-style methods.
        """
        merged = self._headers
        if headers:
            merged = validate_headers({**(merged or {}), **headers})
        return self._options_class(self, self._timeout if timeout is UNSET else timeout, merged)

    def _send_request(self, call: ClientCall, frames: List[Any], now: float,
                      order: Optional[List[Backend]] = None) -> bool:
        """Hand a request to the first server, in the session's order, that is up and can take it now."""
        session = self._session
        for backend in session.send_order() if order is None else order:
            transport = backend.transport
            if self._can_take(transport) and transport.try_send(frames):
                session.sent(call, backend, now)
                return True
        return False

    def _send_waited(self, call: ClientCall, frames: List[Any]) -> bool:
        """:meth:`_send_request` for a request that waited for a server: it tells what is left of its timeout."""
        now = monotonic()
        if call.deadline is not None and now - call.sent_at > _LATE:
            frames[-1] = self._session.with_remaining(call, frames[-1], now)
        return self._send_request(call, frames, now)

    @staticmethod
    def _can_take(transport: Any) -> bool:
        """True if ``transport`` may carry a new call: a live connection, and only one if this client bound it."""
        connections = transport.connections
        return connections == 1 or (connections > 1 and not transport.bound_peer_limit)

    def _waits(self) -> List[Tuple[Any, bool]]:
        """For a call waiting for a server: each socket, and whether to wait for room on it (True) or
        for a change of its connections (False: it has no usable one, or its server was removed)."""
        return [(b.transport, not b.removed and self._can_take(b.transport))
                for b in self._session.balancer.backends]

    def _resend(self, call: ClientCall, error: ServerStopping) -> None:
        """A server refused ``call`` before it ran (it is stopping): send it to another at once, or fail it."""
        payload, call.payload = call.payload, None
        try:
            went = self._send_request(call, [b"", payload], monotonic(), self._session.resend_order(call))
        except ClosedError:
            went = False
        if went:
            call.payload = payload
        else:
            self._fail(call, error)
