"""What every driver's Client and Server share, whatever the event loop: a session, sockets, endpoints.

``zrpc.gevent`` and ``zrpc.aio`` each subclass these with what only they
do: waiting, tasks or greenlets, timers, closing. Nothing here waits, sleeps
or registers with an event loop; a subclass provides ``_new_transport()``,
which makes one of its transports (a :class:`zrpc.sockets.SocketCore`).
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, List, Mapping, Optional, Tuple

import zmq

from .core.balancing import Backend, ResolvedName, addresses_of, split_tcp_endpoint, tcp_endpoint
from .core.client_session import ClientCall, ClientSession
from .core.errors import AuthenticationFailed, ClosedError, ServerStopping, TooManyServers, ZrpcError
from .core.server_session import Cancellation, ServerCall, ServerSession
from .core.session import Session
from .sockets import SocketCore

__all__ = ["NodeBase", "ClientBase", "ServerBase", "UNSET"]

#: "Not given" for call options, so that None can mean "wait forever".
UNSET: Any = object()

#: ``resolver(host, port, family, type)``: ``socket.getaddrinfo``'s contract (records whose [4][0] is an address).
Resolver = Callable[[str, int, int, int], Any]

log = logging.getLogger("zrpc.client")


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
    """The loop-free part of a Client: a socket per server, the choice between them, DNS names, call options."""

    _session: ClientSession
    _timeout: Optional[float]
    _guard: Any  # a zrpc.security.ClientGuard
    #: The driver's view class for ``with_options``: ``_options_class(client, timeout)``.
    _options_class: Callable[..., Any]
    #: Resolves ``tcp://NAME:PORT`` endpoints (None: hand names to zmq as they are).
    _resolver: Optional[Resolver] = socket.getaddrinfo
    #: Seconds between re-resolutions of each name (None: resolve once, at connect).
    _dns_refresh: Optional[float] = 30.0
    CLOSE_LINGER: float

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
        log.error("%s; calls on it fail with TooManyServers until one server is left", exc)
        for call in self._session.open_calls():
            if call.transport is transport:
                self._fail(call, exc)

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
            name = ResolvedName(endpoint, named[0], named[1], self._dns_refresh, time.monotonic())
            self._session.names.append(name)
            self._resolved(name, self._resolve(name))
            if not name.backends:  # not resolvable yet: let zmq keep trying the name meanwhile
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
    def _resolve(self, name: ResolvedName) -> List[str]:
        """The addresses ``name`` resolves to now ([] if it does not). Touches no state: runs in a thread."""
        resolver = self._resolver
        assert resolver is not None
        try:
            return addresses_of(resolver(name.host, name.port, 0, socket.SOCK_STREAM))
        except Exception as exc:  # socket.gaierror, or whatever a custom resolver raises
            log.warning("cannot resolve %s (%s): its servers stay as they are", name.endpoint, exc)
            return []

    def _resolved(self, name: ResolvedName, addresses: List[str]) -> None:
        """``name`` now resolves to ``addresses``: add a server per new one, drain the ones gone."""
        if self._closed:
            return
        added, removed = name.changes(addresses)
        balancer = self._session.balancer
        for backend in removed:
            log.info("%s no longer resolves to %s: it takes no new call, and closes once its calls are over",
                     name.endpoint, backend.endpoint)
            balancer.remove(backend)
        for address in added:
            name.backends[address] = backend = self._add_server(tcp_endpoint(address, name.port))
            log.info("%s resolves to %s: a server in the rotation", name.endpoint, backend.endpoint)

    def _refresh(self, name: ResolvedName) -> None:
        """Resolve ``name`` again without blocking the loop, then call :meth:`_resolved`."""
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

    def with_options(self, *, timeout: Any = UNSET) -> Any:
        """A view of this client (same connection) whose calls use these options.

        ``client.with_options(timeout=2).add(1, 2)``; ``timeout=None`` waits
        forever. The view has ``call``, ``call_async``, ``batch`` and
        attribute-style methods.
        """
        return self._options_class(self, self._timeout if timeout is UNSET else timeout)

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
            went = self._send_request(call, [b"", payload], time.monotonic(), self._session.resend_order(call))
        except ClosedError:
            went = False
        if went:
            call.payload = payload
        else:
            self._fail(call, error)
