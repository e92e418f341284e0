"""Security policy: CURVE keys, certificate files, IP rules, the ZAP decision, the caller's identity.

This module owns *what* is allowed; it never touches an event loop and
imports no gevent. ZeroMQ does the cryptography (CURVE) and asks a ZAP
handler whether to admit each new connection; the driver in
``zrpc.gevent.security`` serves that ZAP socket and hands every request to
:class:`ZapPolicy` here.

:class:`ZapPolicy` is pyzmq's own ``zmq.auth.base.Authenticator`` (ZAP
frame checks, CURVE key lookup, reply format, User-Id) with two things it
lacks: IP rules with CIDR networks, IPv4 and IPv6 (Authenticator matches
exact address strings, and allows either an allow list or a deny list, not
both), and a client-key directory re-read when it changes. It also answers
synchronously (Authenticator's handler is a coroutine that never awaits
unless a callback does) and logs refusals once each, rate-limited.
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import zmq
import zmq.auth
from zmq.auth.base import Authenticator
from zmq.utils import z85

from .core.errors import AuthenticationFailed
from .core.intercept import CallInfo, current_call  # re-exported: who is calling

__all__ = [
    "Key",
    "curve_keypair",
    "write_certificates",
    "load_public_key",
    "load_secret_key",
    "IPRules",
    "ClientKeys",
    "ZapPolicy",
    "CallInfo",
    "current_call",
]

log = logging.getLogger("zrpc.security")

#: A CURVE key: Z85 text (40 characters, str or bytes) or the path of a zmq.auth certificate file.
Key = Union[str, bytes, "os.PathLike[str]"]

#: One ZAP domain per zrpc server socket starts with this (the driver routes requests by domain).
ZAP_DOMAIN_PREFIX = "zrpc-"


def curve_keypair() -> Tuple[bytes, bytes]:
    """A new CURVE key pair ``(public, secret)``, each 40 bytes of Z85 text."""
    return zmq.curve_keypair()


def write_certificates(path_base: Union[str, "os.PathLike[str]"], overwrite: bool = False) -> Tuple[str, str]:
    """Write a new key pair as ``PATH_BASE.key`` (public) and ``PATH_BASE.key_secret`` (mode 0600).

    The files are zmq.auth certificates (``zmq.auth.load_certificate`` reads
    them). Refuses to replace existing files unless ``overwrite``. Returns
    ``(public_file, secret_file)``.
    """
    path_base = os.fspath(path_base)
    directory, name = os.path.split(os.path.abspath(path_base))
    public_file, secret_file = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".key_secret")
    if not overwrite:
        for existing in (public_file, secret_file):
            if os.path.exists(existing):
                raise FileExistsError(f"{existing} exists; remove it or choose another name")
    # pyzmq writes the files with the process umask; a private (0700) staging
    # directory keeps the secret unreadable to others until it is 0600.
    staging = tempfile.mkdtemp(prefix=".zrpc-keygen-", dir=directory)
    try:
        staged_public, staged_secret = zmq.auth.create_certificates(staging, name)
        os.chmod(staged_secret, 0o600)
        os.chmod(staged_public, 0o644)
        os.replace(staged_secret, secret_file)
        os.replace(staged_public, public_file)
    finally:
        for leftover in os.listdir(staging):
            os.unlink(os.path.join(staging, leftover))
        os.rmdir(staging)
    return public_file, secret_file


def _z85(key: Union[str, bytes], what: str) -> Optional[bytes]:
    """``key`` as Z85 bytes if it looks like a Z85 key, else None (it may be a path)."""
    raw = key.encode("ascii", "replace") if isinstance(key, str) else bytes(key)
    if len(raw) != 40:
        return None
    try:
        if len(z85.decode(raw)) == 32:
            return raw
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _load(key: Key, what: str) -> Tuple[bytes, Optional[bytes]]:
    if isinstance(key, (str, bytes)):
        z = _z85(key, what)
        if z is not None:
            return z, None
    path = os.fspath(key)
    if isinstance(path, bytes):
        path = path.decode()
    if not os.path.isfile(path):
        raise ValueError(f"{what}: {path!r} is neither a 40-character Z85 key nor a certificate file")
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read certificate {path!r}: {exc}") from None


def load_public_key(key: Key, what: str = "public key") -> bytes:
    """A public key (Z85 bytes) from Z85 text or a certificate file (public or secret one)."""
    public, _ = _load(key, what)
    return public


def load_secret_key(key: Key, what: str = "secret key") -> Tuple[bytes, bytes]:
    """``(public, secret)`` Z85 bytes from a secret Z85 key or a ``.key_secret`` certificate file."""
    first, secret = _load(key, what)
    if secret is None:
        if isinstance(key, (str, bytes)) and _z85(key, what) is not None:
            secret = first  # a bare Z85 key given where a secret is asked for is the secret
        else:
            raise ValueError(f"{what}: {os.fspath(key)!r} holds no secret key "
                             "(give the NAME.key_secret file, not NAME.key)")
    return zmq.curve_public(secret), secret


class IPRules:
    """Allow and deny lists of addresses or CIDR networks (``10.0.0.0/8``, ``::1``), IPv4 and IPv6.

    An address is refused if it is in a denied network, or if an allow list
    is given and the address is in none of its networks. Deny wins.
    """

    def __init__(self, allow: Optional[Iterable[str]] = None, deny: Optional[Iterable[str]] = None) -> None:
        self.allow = self._networks(allow, "allow_ips") if allow is not None else None
        self.deny = self._networks(deny, "deny_ips") if deny is not None else []

    @staticmethod
    def _networks(items: Iterable[str], what: str) -> List[Any]:
        if isinstance(items, (str, bytes)):
            items = [items]  # type: ignore[list-item]
        networks = []
        for item in items:
            text = item.decode() if isinstance(item, bytes) else str(item)
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{what}: {text!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
        return networks

    @property
    def active(self) -> bool:
        return self.allow is not None or bool(self.deny)

    def refusal(self, address: str) -> Optional[str]:
        """None if ``address`` may connect, else the reason it may not."""
        if not self.active:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            # Not an IP: ipc or inproc peers carry no address; IP rules do not apply to them.
            return None if not address else f"address {address!r} is not an IP address"
        mapped = getattr(ip, "ipv4_mapped", None)
        candidates = (ip, mapped) if mapped is not None else (ip,)
        if any(c.version == net.version and c in net for c in candidates for net in self.deny):
            return "address denied"
        if self.allow is not None and not any(
            c.version == net.version and c in net for c in candidates for net in self.allow
        ):
            return "address not allowed"
        return None


class ClientKeys:
    """The client public keys a server admits: a fixed list, or a directory of ``*.key`` certificates.

    A directory is re-read whenever its listing or a file's size or mtime
    changes (checked at each handshake, and at most every ``recheck`` seconds
    for :meth:`still_allowed`), so keys can be added or revoked while serving.
    """

    def __init__(self, clients: Union[str, "os.PathLike[str]", Sequence[Key]], recheck: float = 1.0) -> None:
        self.directory: Optional[str] = None
        self.recheck = recheck
        self._signature: Any = None
        self._checked = 0.0
        self._keys: Dict[bytes, bool] = {}
        if isinstance(clients, (str, os.PathLike)) and os.path.isdir(os.fspath(clients)):
            self.directory = os.fspath(clients)
            self.refresh(force=True)
        elif isinstance(clients, (str, bytes, os.PathLike)):
            raise ValueError(f"curve_clients: {clients!r} is not a directory; give a directory of "
                             "public certificates or a list of public keys")
        else:
            self._keys = {load_public_key(k, "curve_clients"): True for k in clients}

    def _scan(self) -> Any:
        assert self.directory is not None
        entries = []
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.endswith(".key"):
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    entries.append((entry.name, st.st_mtime_ns, st.st_size))
        return sorted(entries)

    def refresh(self, force: bool = False) -> None:
        """Re-read the directory if it changed (no-op for a fixed list)."""
        if self.directory is None:
            return
        self._checked = time.monotonic()
        try:
            signature = self._scan()
        except OSError as exc:
            log.error("cannot read the client key directory %s: %s (no client admitted)", self.directory, exc)
            self._keys, self._signature = {}, None
            return
        if force or signature != self._signature:
            keys: Dict[bytes, bool] = {}
            for name, _, _ in signature:
                try:
                    public, _ = zmq.auth.load_certificate(os.path.join(self.directory, name))
                    keys[public] = True
                except (OSError, ValueError) as exc:
                    log.warning("skipping client certificate %s: %s", name, exc)
            if self._signature is not None or force:
                log.info("loaded %d client key(s) from %s", len(keys), self.directory)
            self._keys, self._signature = keys, signature

    def __contains__(self, public_z85: bytes) -> bool:
        return public_z85 in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def callback(self, domain: str, public_z85: bytes) -> bool:
        """Authenticator's credentials-provider hook: is this key admitted now?"""
        self.refresh()
        return public_z85 in self._keys

    def still_allowed(self, public_z85: bytes) -> bool:
        """For a connection admitted earlier: is its key still admitted (directory rechecked at most every ``recheck`` s)?"""
        if self.directory is not None and time.monotonic() - self._checked >= self.recheck:
            self.refresh()
        return public_z85 in self._keys


class _RefusalLog:
    """Logs each refusal once per (address, reason) and window, and at most ``burst`` lines per window."""

    def __init__(self, logger: logging.Logger, window: float = 60.0, burst: int = 20) -> None:
        self.log = logger
        self.window = window
        self.burst = burst
        self._start = time.monotonic()
        self._seen: Dict[Tuple[str, str], int] = {}
        self._lines = 0
        self._suppressed = 0

    def refused(self, address: str, mechanism: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._start >= self.window:
            if self._suppressed:
                self.log.warning("%d more connection(s) refused in the last %.0fs (not logged one by one)",
                                 self._suppressed, now - self._start)
            self._start, self._seen, self._lines, self._suppressed = now, {}, 0, 0
        key = (address, reason)
        if key in self._seen or self._lines >= self.burst:
            self._suppressed += 1
            if key in self._seen:
                self._seen[key] += 1
            return
        if len(self._seen) < 4 * self.burst:
            self._seen[key] = 1
        self._lines += 1
        self.log.warning("refused a %s connection from %s: %s", mechanism, address or "(no address)", reason)


class ZapPolicy(Authenticator):
    """One server's admission policy: IP rules, then (under CURVE) the client key.

    Built on pyzmq's ``Authenticator`` (ZAP frame validation, CURVE lookup,
    reply and User-Id = the client's Z85 public key); IP rules are checked
    here first because Authenticator only matches exact addresses.
    ``clients=None`` admits any CURVE client (that knows the server's key).
    The policy has no socket: :meth:`authenticate` takes a ZAP request and
    returns the reply frames.
    """

    def __init__(self, ips: IPRules, clients: Optional[ClientKeys], name: str = "zrpc") -> None:
        super().__init__(context=None, log=logging.getLogger("zrpc.security.zap"))
        self.ips = ips
        self.clients = clients
        self.name = name
        if clients is None:
            self.allow_any = True
        else:
            self.configure_curve_callback("*", clients)
        self.refusals = _RefusalLog(log)
        self._reply: Optional[List[bytes]] = None
        self.admitted = 0
        self.refused = 0

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        # Authenticator would send on its own socket; the driver sends instead.
        uid = user_id if status_code == b"200" else b""
        if isinstance(uid, str):
            uid = uid.encode(self.encoding, "replace")
        self._reply = [b"1.0", request_id, status_code, status_text, uid, b""]

    def authenticate(self, request: List[bytes]) -> List[bytes]:
        """The ZAP reply frames for one ZAP request (RFC 27), deciding now."""
        self._reply = None
        address = request[3].decode("utf-8", "replace") if len(request) > 3 else ""
        mechanism = request[5].decode("ascii", "replace") if len(request) > 5 else "?"
        reason = self.ips.refusal(address) if len(request) >= 6 else None
        if reason is not None:
            self._send_zap_reply(request[1], b"400", reason.encode())
        else:
            # One policy per domain: its keys are Authenticator's default domain "*".
            coro = self.handle_zap_message([*request[:2], b"", *request[3:]])
            try:
                coro.send(None)
            except StopIteration:
                pass
            else:  # only an async credentials provider awaits; ours never does
                coro.close()
                self._send_zap_reply(request[1], b"500", b"asynchronous policy not supported")
        reply = self._reply
        if reply is not None and mechanism == "NULL":
            reply[4] = b""  # no User-Id without CURVE (Authenticator says "anonymous")
        if reply is None:  # Authenticator could not even read a request id
            return [b"1.0", b"", b"400", b"bad ZAP request", b"", b""]
        if reply[2] == b"200":
            self.admitted += 1
        else:
            self.refused += 1
            self.refusals.refused(address, mechanism, reply[3].decode("utf-8", "replace").lower())
        return reply


# -- what a driver serves and holds, with no event loop ------------------------------
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_domains = itertools.count(1)


class ZapHandler:
    """Serves ZAP for every zrpc server of one zmq context; a driver subclass reads its socket.

    The subclass keeps its own ``_handlers`` registry, calls
    :meth:`answer_pending` whenever the socket may be readable, and stops
    reading in :meth:`_stop`. Requests for a domain nobody registered are
    refused (fail closed).
    """

    _handlers: Dict[int, "ZapHandler"]

    def __init__(self, context: zmq.Context) -> None:
        self.context = context
        self.policies: Dict[bytes, ZapPolicy] = {}
        self._closed = False
        self._sock = context.socket(zmq.REP)
        self._sock.linger = 0
        try:
            self._bind()
        except zmq.ZMQError as exc:
            self._sock.close()
            raise RuntimeError(f"cannot serve ZAP on this zmq context ({exc}): another ZAP handler "
                               "(e.g. zmq.auth's) is already bound to it; give zrpc its own context") from None

    def _pause(self) -> None:
        """Wait a moment before binding again (the driver's own way of sleeping)."""
        time.sleep(0.005)

    def _bind(self) -> None:
        # A handler closed just before may still hold the inproc name for a moment
        # (zmq releases it in its reaper thread): retry briefly before giving up.
        for attempt in range(200):
            try:
                self._sock.bind(_ZAP_ENDPOINT)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or attempt == 199:
                    raise
                self._pause()

    @classmethod
    def register(cls, context: zmq.Context, zap_policy: "ZapPolicy") -> bytes:
        """Route this context's ZAP requests for a new domain to ``zap_policy``; return the domain."""
        handler = cls._handlers.get(id(context))
        if handler is None or handler._closed or handler.context is not context:
            handler = cls._handlers[id(context)] = cls(context)
        domain = f"{ZAP_DOMAIN_PREFIX}{next(_domains)}".encode()
        handler.policies[domain] = zap_policy
        return domain

    @classmethod
    def unregister(cls, context: zmq.Context, domain: bytes) -> None:
        """Forget a domain; the handler closes with its last one."""
        handler = cls._handlers.get(id(context))
        if handler is None or handler.context is not context:
            return
        handler.policies.pop(domain, None)
        if not handler.policies:
            del cls._handlers[id(context)]
            handler.close()

    def answer_pending(self) -> bool:
        """Answer every ZAP request queued now; False once the socket can never read again."""
        while not self._closed:
            try:
                request = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            except zmq.ZMQError:
                return False
            try:
                self._answer(request)
            except Exception:
                log.exception("error while answering a ZAP request (ignored)")
        return False

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

    def _stop(self) -> None:
        """Stop reading the socket (the driver's part)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop()
        try:
            self._sock.unbind(_ZAP_ENDPOINT)  # frees the name now, for the next handler
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

    def __init__(self, zap: Any, context: Optional[zmq.Context], curve_secret_key: Optional[Key],
                 curve_clients: Union[None, str, Sequence[Key]],
                 allow_ips: Optional[Sequence[str]], deny_ips: Optional[Sequence[str]]) -> None:
        if curve_secret_key is None and curve_clients is not None:
            raise ValueError("curve_clients needs curve_secret_key (the server's CURVE secret key)")
        self.curve = curve_secret_key is not None
        self.public_key: Optional[bytes] = None
        self._secret: Optional[bytes] = None
        if curve_secret_key is not None:
            self.public_key, self._secret = load_secret_key(curve_secret_key, "curve_secret_key")
        self.clients = ClientKeys(curve_clients) if curve_clients is not None else None
        self.policy = ZapPolicy(IPRules(allow_ips, deny_ips), self.clients)
        self.context = context or zmq.Context.instance()
        self._zap = zap  # the driver's ZAP handler class (a greenlet, an asyncio reader...)
        self.domain: Optional[bytes] = zap.register(self.context, self.policy)

    @classmethod
    def create(cls, zap: Any, context: Optional[zmq.Context], curve_secret_key: Optional[Key] = None,
               curve_clients: Union[None, str, Sequence[Key]] = None,
               allow_ips: Optional[Sequence[str]] = None,
               deny_ips: Optional[Sequence[str]] = None) -> Optional["ServerGuard"]:
        """A guard, or None when nothing is asked for (then the server costs nothing more)."""
        if curve_secret_key is None and curve_clients is None and allow_ips is None and deny_ips is None:
            return None
        return cls(zap, context, curve_secret_key, curve_clients, allow_ips, deny_ips)

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
            self._zap.unregister(self.context, domain)


class ClientGuard:
    """A client's security: CURVE client options and a handshake monitor on each socket."""

    def __init__(self, curve_server_key: Optional[Key], curve_secret_key: Optional[Key],
                 on_failure: Callable[[zmq.Socket, AuthenticationFailed], None]) -> None:
        if curve_server_key is None and curve_secret_key is not None:
            raise ValueError("curve_secret_key needs curve_server_key (the server's public key)")
        self.server_key = (load_public_key(curve_server_key, "curve_server_key")
                           if curve_server_key is not None else None)
        if self.server_key is not None:
            if curve_secret_key is None:
                self.public_key, self._secret = curve_keypair()  # ephemeral: any-client servers
            else:
                self.public_key, self._secret = load_secret_key(curve_secret_key, "curve_secret_key")
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
