"""The gevent side of security: the ZAP handler greenlet and the client's handshake watcher.

Decisions belong to ``zrpc.security`` (:class:`ZapPolicy`); this module only
moves ZAP requests and socket-monitor events on gevent:

* :class:`ZapDriver`: one per zmq context, a greenlet serving the context's
  ``inproc://zeromq.zap.01`` REP socket. Each server socket gets its own ZAP
  domain, and the driver hands each request to that server's policy.
  Requests for a domain it does not know are refused (fail closed).
  Closed when its last server unregisters.
* :class:`HandshakeWatch`: reads the handshake events of a socket's monitor (the transport owns the monitor), so that
  a client learns at once that a handshake failed (refused key or address,
  wrong server key, CURVE on one side only) instead of timing out.
* :class:`ServerGuard` / :class:`ClientGuard`: what Server and Client hold;
  they set the CURVE options on each socket before it binds or connects.
"""
from __future__ import annotations

import itertools
import logging
import socket as _socket
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import gevent
import zmq
from gevent.socket import wait_read

from .. import security as policy
from ..core.errors import AuthenticationFailed

__all__ = ["ZapDriver", "HandshakeWatch", "ServerGuard", "ClientGuard"]

log = logging.getLogger("zrpc.security")

_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_POLLIN = int(zmq.POLLIN)
# Loops re-check ZMQ_EVENTS at least this often, so a missed FD edge costs a delay, never a hang.
_POLL_BACKSTOP = 1.0
_domains = itertools.count(1)


def _drain(sock: zmq.Socket, handle: Callable[[List[bytes]], None], closed: Callable[[], bool]) -> None:
    """Read multipart messages from ``sock`` on gevent until ``closed()``; ``handle`` each."""
    fd = sock.getsockopt(zmq.FD)
    while not closed():
        try:
            if not sock.getsockopt(zmq.EVENTS) & _POLLIN:
                try:
                    wait_read(fd, _POLL_BACKSTOP)
                except _socket.timeout:
                    pass
                continue
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            continue
        except zmq.ZMQError:
            if closed():
                return
            raise
        try:
            handle(frames)
        except Exception:
            log.exception("error while handling a security event (ignored)")


class ZapDriver:
    """Serves ZAP for every zrpc server of one zmq context."""

    _drivers: Dict[int, "ZapDriver"] = {}

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.policies: Dict[bytes, policy.ZapPolicy] = {}
        self._sock = context.socket(zmq.REP)
        self._sock.linger = 0
        try:
            self._bind()
        except zmq.ZMQError as exc:
            self._sock.close()
            raise RuntimeError(f"cannot serve ZAP on this zmq context ({exc}): another ZAP handler "
                               "(e.g. zmq.auth's) is already bound to it; give zrpc its own context") from None
        self._closed = False
        self._greenlet = gevent.spawn(_drain, self._sock, self._answer, lambda: self._closed)

    def _bind(self) -> None:
        # A driver closed just before may still hold the inproc name for a moment
        # (zmq releases it in its reaper thread): retry briefly before giving up.
        for attempt in range(200):
            try:
                self._sock.bind(_ZAP_ENDPOINT)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or attempt == 199:
                    raise
                gevent.sleep(0.005)

    @classmethod
    def register(cls, context: zmq.Context, zap_policy: policy.ZapPolicy) -> bytes:
        """Route this context's ZAP requests for a new domain to ``zap_policy``; return the domain."""
        driver = cls._drivers.get(id(context))
        if driver is None or driver._closed or driver.context is not context:
            driver = cls._drivers[id(context)] = cls(context)
        domain = f"{policy.ZAP_DOMAIN_PREFIX}{next(_domains)}".encode()
        driver.policies[domain] = zap_policy
        return domain

    @classmethod
    def unregister(cls, context: zmq.Context, domain: bytes) -> None:
        """Forget a domain; the driver closes with its last one."""
        driver = cls._drivers.get(id(context))
        if driver is None or driver.context is not context:
            return
        driver.policies.pop(domain, None)
        if not driver.policies:
            del cls._drivers[id(context)]
            driver.close()

    def _answer(self, request: List[bytes]) -> None:
        if len(request) < 2:
            return  # a REP socket must answer, but there is no request id to answer with
        domain = request[2] if len(request) > 2 else b""
        zap_policy = self.policies.get(domain)
        if zap_policy is None:
            log.warning("ZAP request for unknown domain %r refused", domain)
            reply = [b"1.0", request[1], b"400", b"unknown ZAP domain", b"", b""]
        else:
            reply = zap_policy.authenticate(request)
        self._sock.send_multipart(reply)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)
        try:
            self._sock.unbind(_ZAP_ENDPOINT)  # frees the name now, for the next driver
        except zmq.ZMQError:
            pass
        self._sock.close(linger=0)


#: Monitor events that mean "this handshake failed": authentication refused, or mechanisms that cannot agree.
_FAILURES = {
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "the server refused this client (unknown key or address not allowed)",
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "security handshake failed (CURVE on one side only, or a protocol error)",
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "security handshake failed (wrong server key?)",
}
_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)


class HandshakeWatch:
    """Reads one socket's handshake events (from the transport's monitor); calls ``on_failure(sock, exc)``."""

    def __init__(self, sock: zmq.Socket, on_failure: Callable[[zmq.Socket, AuthenticationFailed], None],
                 curve: bool) -> None:
        self.sock = sock
        self.failure: Optional[AuthenticationFailed] = None
        self._on_failure = on_failure
        self._curve = curve

    def event(self, event: int, value: int, endpoint: str) -> None:
        if event == _SUCCEEDED:
            self.failure = None
            return
        reason = _FAILURES.get(event)
        if reason is None:
            return
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value:
            reason += f" (ZAP status {value})"
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            reason = ("security handshake failed: the server does not use CURVE" if self._curve else
                      "security handshake failed: the server requires CURVE (give curve_server_key)")
        exc = AuthenticationFailed(f"{endpoint}: {reason}")
        self.failure = exc
        self._on_failure(self.sock, exc)


class ServerGuard:
    """A server's security: CURVE server options and its ZAP policy on the server's context."""

    def __init__(self, context: Optional[zmq.Context], curve_secret_key: Optional[policy.Key],
                 curve_clients: Union[None, str, Sequence[policy.Key]],
                 allow_ips: Optional[Sequence[str]], deny_ips: Optional[Sequence[str]]) -> None:
        if curve_secret_key is None and curve_clients is not None:
            raise ValueError("curve_clients needs curve_secret_key (the server's CURVE secret key)")
        self.curve = curve_secret_key is not None
        self.public_key: Optional[bytes] = None
        self._secret: Optional[bytes] = None
        if curve_secret_key is not None:
            self.public_key, self._secret = policy.load_secret_key(curve_secret_key, "curve_secret_key")
        self.clients = policy.ClientKeys(curve_clients) if curve_clients is not None else None
        self.policy = policy.ZapPolicy(policy.IPRules(allow_ips, deny_ips), self.clients)
        self.context = context or zmq.Context.instance()
        self.domain: Optional[bytes] = ZapDriver.register(self.context, self.policy)

    @classmethod
    def create(cls, context: Optional[zmq.Context], curve_secret_key: Optional[policy.Key] = None,
               curve_clients: Union[None, str, Sequence[policy.Key]] = None,
               allow_ips: Optional[Sequence[str]] = None,
               deny_ips: Optional[Sequence[str]] = None) -> Optional["ServerGuard"]:
        """A guard, or None when nothing is asked for (then the server costs nothing more)."""
        if curve_secret_key is None and curve_clients is None and allow_ips is None and deny_ips is None:
            return None
        return cls(context, curve_secret_key, curve_clients, allow_ips, deny_ips)

    def setup(self, sock: zmq.Socket) -> None:
        """Socket setup (before bind/connect): CURVE server role and this server's ZAP domain."""
        if self.domain is None:
            raise RuntimeError("the server is closed")
        if self._secret is not None:
            sock.curve_server = True
            sock.curve_secretkey = self._secret
        sock.zap_domain = self.domain  # NULL connections are also checked (IP rules), as ZAP needs a domain

    def revoked(self, frame: Any) -> bool:
        """True if the key of an already admitted connection has since been removed from curve_clients."""
        if self.clients is None or self.clients.directory is None:
            return False
        try:
            user_id = frame.get("User-Id")
        except (zmq.ZMQError, AttributeError):
            return False
        return bool(user_id) and not self.clients.still_allowed(user_id.encode())

    def close(self) -> None:
        domain, self.domain = self.domain, None
        if domain is not None:
            ZapDriver.unregister(self.context, domain)


class ClientGuard:
    """A client's security: CURVE client options and a handshake monitor on each socket."""

    def __init__(self, curve_server_key: Optional[policy.Key], curve_secret_key: Optional[policy.Key],
                 on_failure: Callable[[zmq.Socket, AuthenticationFailed], None]) -> None:
        if curve_server_key is None and curve_secret_key is not None:
            raise ValueError("curve_secret_key needs curve_server_key (the server's public key)")
        self.server_key = (policy.load_public_key(curve_server_key, "curve_server_key")
                           if curve_server_key is not None else None)
        if self.server_key is not None:
            if curve_secret_key is None:
                self.public_key, self._secret = policy.curve_keypair()  # ephemeral: any-client servers
            else:
                self.public_key, self._secret = policy.load_secret_key(curve_secret_key, "curve_secret_key")
        self._on_failure = on_failure
        self.watches: Dict[zmq.Socket, HandshakeWatch] = {}

    def setup(self, sock: zmq.Socket) -> None:
        """Socket setup (before connect/bind): CURVE client keys, and a watch for its handshakes."""
        if self.server_key is not None:
            sock.curve_serverkey = self.server_key
            sock.curve_publickey = self.public_key
            sock.curve_secretkey = self._secret
        self.watches[sock] = HandshakeWatch(sock, self._on_failure, self.server_key is not None)

    def watch(self, sock: zmq.Socket) -> Optional[Callable[[int, int, str], None]]:
        """The handler of ``sock``'s monitor events."""
        watch = self.watches.get(sock)
        return watch.event if watch is not None else None

    def failure(self, sock: zmq.Socket) -> Optional[AuthenticationFailed]:
        """The last handshake failure of ``sock``, None once a handshake has succeeded since."""
        watch = self.watches.get(sock)
        return watch.failure if watch is not None else None

    def close(self) -> None:
        self.watches = {}
