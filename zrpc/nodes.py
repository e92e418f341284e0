"""What every driver's Client and Server share, whatever the event loop: a session, sockets, endpoints.

``zrpc.gevent`` and ``zrpc.aio`` each subclass these with what only they
do: waiting, tasks or greenlets, timers, closing. Nothing here waits, sleeps
or registers with an event loop; a subclass provides ``_new_transport()``,
which makes one of its transports (a :class:`zrpc.sockets.SocketCore`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import zmq

from .core.client_session import ClientCall, ClientSession
from .core.errors import AuthenticationFailed
from .core.intercept import ClientCallInfo, Interceptor, run_chain, validate_headers
from .core.server_session import DEADLINE_PASSED, Cancellation, ServerCall, ServerSession
from .core.session import Session
from .sockets import SocketCore

__all__ = ["NodeBase", "ClientBase", "ServerBase", "UNSET"]

#: "Not given" for call options, so that None can mean "wait forever".
UNSET: Any = object()


class NodeBase:
    """A session and its sockets: the part of a Client or Server that no event loop touches."""

    _socket_type: int = zmq.DEALER
    _session: Session

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

    def _new_transport(self) -> Any:
        raise NotImplementedError

    # -- for the driver and its Client/Server ---------------------------------------
    def _send_nowait(self, channel: Any, payload: bytes) -> bool:
        raise NotImplementedError

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


class ServerBase(NodeBase):
    """The loop-free part of a Server: one ROUTER for every endpoint, and what its session knows."""

    _socket_type = zmq.ROUTER
    _session: ServerSession
    _transport: SocketCore
    _guard: Any  # a zrpc.security.ServerGuard, or None
    #: Server interceptors, outermost first (empty: the serve path runs none of their code).
    _interceptors: List[Interceptor]

    @property
    def interceptors(self) -> List[Interceptor]:
        """The server's interceptors, outermost first (see the README's "Interceptors")."""
        return list(self._interceptors)

    @property
    def stats(self) -> Dict[str, int]:
        """Counters and gauges for observers (zrpc.metrics): calls running and queued, bad messages,
        callers lost (no heartbeat), calls refused because the queue was full."""
        session = self._session
        return {"running": session.running, "queued": session.queued, "bad_messages": session.bad_messages,
                "callers_lost": session.callers_lost, "refused_busy": session.refused_busy}

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

    def _cancel(self, call: ServerCall, why: Cancellation) -> None:
        raise NotImplementedError

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

    def _launch(self, call: ServerCall) -> None:
        raise NotImplementedError

    def _send_reject(self, frames: List[Any]) -> None:
        raise NotImplementedError

    def _admit(self, call: ServerCall) -> bool:
        """A new call (running or queued) from the message being read: note its caller, or refuse it."""
        frame = self._transport.frame
        if self._guard is not None and self._guard.revoked(frame):
            self._refuse(call, "AuthenticationFailed", "this client's key is no longer admitted by the server")
            return False
        call.connection = frame  # its metadata (Peer-Address, User-Id) for current_call()
        return True

    def _refuse(self, call: ServerCall, name: str, message: str) -> None:
        """Answer a call that was accepted but must not run, with ERR ``name``."""
        self._session.cancel(call, Cancellation(message))
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
    """The loop-free part of a Client: a socket per endpoint, round robin, call options."""

    _session: ClientSession
    _timeout: Optional[float]
    _guard: Any  # a zrpc.security.ClientGuard
    #: The driver's view class for ``with_options``: ``_options_class(client, timeout, headers)``.
    _options_class: Callable[..., Any]
    #: Client interceptors, outermost first (empty: calls run none of their code).
    _interceptors: List[Interceptor] = []
    _headers: Optional[Dict[str, Any]] = None

    def _init_calling(self, headers: Optional[Mapping[str, Any]], interceptors: Any) -> None:
        """Validate the headers every call sends, and keep the interceptors."""
        self._headers = validate_headers(headers)
        self._interceptors = list(interceptors or ())

    def _intercepted(self, method: str, args: Any, kwargs: Dict[str, Any], timeout: Optional[float],
                     headers: Optional[Dict[str, Any]], async_: bool) -> Any:
        """Make a call through the interceptors: what the caller gets (value, or the future if ``async_``)."""
        return self._run_chain(ClientCallInfo(method, args, kwargs, headers, timeout, async_))

    def _run_chain(self, info: ClientCallInfo) -> Any:
        def send() -> Any:
            future = self._start(info.method, info.args, info.kwargs, info.timeout, validate_headers(info.headers))
            if info.async_:
                self._watch(future, info)
                return future
            return self._wait(future, info)

        try:
            return run_chain(self._interceptors, info, send)
        except BaseException as exc:
            info._settle(exc)  # nothing sent (or already settled: then a no-op)
            raise

    def _start(self, method: str, args: Any, kwargs: Dict[str, Any], timeout: Optional[float],
               headers: Optional[Dict[str, Any]] = None) -> Any:
        raise NotImplementedError

    def _watch(self, future: Any, info: ClientCallInfo) -> None:
        """Settle ``info`` when ``future`` is done."""
        raise NotImplementedError

    def _wait(self, future: Any, info: ClientCallInfo) -> Any:
        """What a plain call returns: the result (or, on asyncio, an awaitable of it), settling ``info``."""
        raise NotImplementedError

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
        transport.on_event = self._guard.watch(transport.socket)
        return transport

    def _on_handshake_failed(self, sock: zmq.Socket, exc: AuthenticationFailed) -> None:
        """A handshake on ``sock`` failed: fail the calls that went to it, wake the calls waiting to send."""
        for call in self._session.open_calls():
            if call.transport is not None and call.transport.socket is sock:
                self._fail(call, exc)
        for transport in self._transports:
            if transport.socket is sock:
                transport.wake_senders()

    def _refusal(self) -> Optional[AuthenticationFailed]:
        """The error to raise if every server refused this client's handshake (waiting cannot help)."""
        failures = [self._guard.failure(transport.socket) for transport in self._transports]
        return failures[0] if failures and all(failures) else None

    def _fail(self, call: ClientCall, exc: BaseException) -> None:
        raise NotImplementedError

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

    def connect(self, endpoint: str) -> str:
        """Connect to one more server; new calls are spread over every server that is up.

        Each endpoint gets its own socket, so a call's later events reach the
        server that took it (one shared DEALER would scatter them).
        """
        connected = self._client_transport().connect(endpoint)
        self._session.endpoints.append(connected)
        return connected

    def bind(self, endpoint: str) -> str:
        """Listen for a server that connects (reverse direction); returns the bound endpoint.

        Use one server per bound endpoint: several servers behind one bound
        socket would share its round robin, as with zerorpc.
        """
        bound = self._client_transport().bind(endpoint)
        self._session.endpoints.append(bound)
        return bound

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

    def _send_request(self, call: ClientCall, frames: List[Any], now: float) -> bool:
        """Hand a request to the first socket, in the session's order, that is up and can take it now."""
        transports = self._transports
        count = len(transports)
        if count == 1:  # the usual case, without building an order
            transport = transports[0]
            if transport.connections and transport.try_send(frames):
                self._session.sent(call, transport, 0, 1, now)
                return True
            return False
        for index in self._session.send_order(count):
            transport = transports[index]
            if transport.connections and transport.try_send(frames):
                self._session.sent(call, transport, index, count, now)
                return True
        return False
