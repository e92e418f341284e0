"""Which server a client's next call goes to: least calls in flight, ejection, probes, DNS names.

This module owns a client's view of its servers (one :class:`Backend` per
socket) and nothing else: it never touches a socket, a clock or a task.
:class:`zrpc.core.client_session.ClientSession` feeds it what happens to
calls; the drivers only carry out what it says.

Theory of operation
-------------------
* **Least in flight.** :meth:`Balancer.order` lists the servers a new call
  may go to, fewest calls in flight first; servers with the same count are
  taken in turn (the rotation moves on with every call sent), so an idle
  client still spreads its calls.
* **Ejection.** A server that stops answering is taken out of the rotation
  (:meth:`Balancer.eject`): one of its calls lost its heartbeats, or timed
  out while nothing at all was heard from that server since the call was
  sent, or it answered ``ServerStopping``. Calls already in flight there
  stay where they are (they end by themselves: reply, heartbeat loss or
  timeout). A client with a single server never ejects it: it has nowhere
  else to go.
* **The bound.** A new call only goes to a server whose calls in flight are
  no more than any other server's. So when one of S servers hangs, the
  calls stuck there number at most ``floor((C - 1) / S) + 1`` (C: the
  client's calls in flight), and they fail with LostRemote within
  3.25 heartbeat intervals (or their timeout, if shorter); by then the
  server is ejected and no further call goes there.
* **Probes.** An ejected server gets a ``_zerorpc_ping`` of the client's own
  (never a user's call) once its backoff passed: the first interval is
  ``probe_backoff``, doubling after each unanswered probe up to
  ``max_backoff``. A pong (or any reply on one of its calls, unless it was
  ejected because it is stopping) brings it back with a clean slate;
  ``ServerStopping`` or silence keeps it out. A new connection to it (the
  process restarted, the network came back) also brings it back: that is
  how a server restarted in a rolling restart returns at once.
* **Fallback.** Ejected servers come last in the order, so a call still
  goes to one of them when no server in the rotation can take it now
  (all down, or their queues full) rather than nowhere; the retry of a
  call refused with ``ServerStopping`` only goes to a server in the
  rotation (an ejected one may be hung: better the caller hears at once).
* **Removal.** A server removed (its DNS record went away) takes no new
  call; once its calls in flight are over, :meth:`Balancer.drained` hands
  it to the driver to close.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["Backend", "Balancer", "ResolvedName", "split_tcp_endpoint", "tcp_endpoint"]

log = logging.getLogger("zrpc.client")


class Backend:
    """One server as the client sees it: its socket (``transport``), calls in flight, health."""

    __slots__ = ("transport", "endpoint", "in_flight", "last_heard", "ejected", "retry_at",
                 "backoff", "probe", "removed", "sent", "stopping")

    def __init__(self, transport: Any, endpoint: str, backoff: float) -> None:
        self.transport = transport
        self.endpoint = endpoint
        #: The user's calls that went out here and are not over.
        self.in_flight = 0
        #: When anything last arrived from this server on a call (``-inf``: never).
        self.last_heard = float("-inf")
        self.ejected = False
        #: Ejected because it said ServerStopping: only a pong or a new connection brings it back.
        self.stopping = False
        self.retry_at = 0.0
        self.backoff = backoff
        #: The client's own ``_zerorpc_ping`` in flight to an ejected server, if any.
        self.probe: Any = None
        self.removed = False
        #: Calls sent here so far (for status and tests).
        self.sent = 0

    def __repr__(self) -> str:
        state = "removed" if self.removed else "ejected" if self.ejected else "up"
        return f"<Backend {self.endpoint} {state} in_flight={self.in_flight}>"


class Balancer:
    """The servers of one client and the choice between them (see the module's theory of operation).

    ``probe_backoff`` is the wait before the first probe of an ejected
    server, doubling per unanswered probe up to ``max_backoff``;
    ``probe_timeout`` is how long a probe may stay unanswered.
    """

    def __init__(self, *, probe_backoff: float, max_backoff: float, probe_timeout: float) -> None:
        self.backends: List[Backend] = []
        self.probe_backoff = probe_backoff
        self.max_backoff = max(max_backoff, probe_backoff)
        self.probe_timeout = probe_timeout
        #: Servers not removed (the ones a call may go to).
        self.active = 0
        self._rotation = 0
        #: Called with each probe the balancer stops waiting for (its owner forgets the call).
        self.forget_probe: Optional[Callable[[Any], None]] = None

    # -- the servers ------------------------------------------------------------
    def add(self, transport: Any, endpoint: str) -> Backend:
        """A new server, in the rotation at once."""
        backend = Backend(transport, endpoint, self.probe_backoff)
        self.backends.append(backend)
        self.active += 1
        return backend

    def remove(self, backend: Backend) -> None:
        """Take ``backend`` out for good: no new call; it is :meth:`drained` once its calls are over."""
        if not backend.removed:
            backend.removed = True
            self.active -= 1

    def drained(self) -> List[Backend]:
        """Removed servers with no call in flight any more: forgotten now, the driver closes their sockets."""
        done = [b for b in self.backends if b.removed and not b.in_flight]
        if done:
            self.backends = [b for b in self.backends if b not in done]
        return done

    @property
    def several(self) -> bool:
        """True if there is more than one server to choose from (else there is nothing to decide)."""
        return self.active > 1

    # -- choosing ---------------------------------------------------------------
    def order(self, retry: bool = False) -> List[Backend]:
        """The servers to offer a new call to, in order: fewest calls in flight first, ties in turn.

        Ejected servers follow the others (a fallback), except with
        ``retry`` (a call refused with ServerStopping): then only servers in
        the rotation.
        """
        backends = self.backends
        if len(backends) == 1:
            only = backends[0]
            return [] if only.removed or (retry and only.ejected) else [only]
        up = self._least_first([b for b in backends if not b.ejected and not b.removed])
        if retry:
            return up
        ejected = [b for b in backends if b.ejected and not b.removed]
        return up + self._least_first(ejected) if ejected else up

    def _least_first(self, candidates: List[Backend]) -> List[Backend]:
        count = len(candidates)
        if count > 1:
            start = self._rotation % count
            candidates = candidates[start:] + candidates[:start]
            candidates.sort(key=_in_flight)  # stable: equal counts keep the rotation's order
        return candidates

    def sent(self, backend: Backend) -> None:
        """A user's call went out to ``backend``."""
        backend.in_flight += 1
        backend.sent += 1
        self._rotation += 1

    def finished(self, backend: Backend) -> None:
        """One of ``backend``'s calls is over."""
        backend.in_flight -= 1

    # -- health -------------------------------------------------------------------
    def heard(self, backend: Backend, now: float) -> None:
        """A reply arrived from ``backend`` on one of its calls: it is alive (an ejected one comes back,
        unless it is stopping: a draining server still answers the calls it has)."""
        backend.last_heard = now
        if backend.ejected and not backend.stopping:
            self.readmit(backend)

    def connected(self, backend: Backend) -> None:
        """A new connection to ``backend`` is up (a restarted process, a network back): a clean slate."""
        if backend.ejected:
            log.info("server %s connected again", backend.endpoint)
            self.readmit(backend)

    def readmit(self, backend: Backend) -> None:
        """Back into the rotation, with a clean slate."""
        if backend.ejected:
            log.info("server %s answers again: back in the rotation", backend.endpoint)
        backend.ejected = backend.stopping = False
        backend.backoff = self.probe_backoff
        self._drop_probe(backend)

    def eject(self, backend: Backend, now: float, why: str, stopping: bool = False) -> None:
        """Take ``backend`` out of the rotation (it stopped answering, or it is ``stopping``) until a
        probe, a reply or a new connection says otherwise."""
        if backend.removed or not self.several:
            return
        if not backend.ejected:
            log.warning("server %s taken out of the rotation: %s; probing it in %gs",
                        backend.endpoint, why, backend.backoff)
            backend.ejected = True
        backend.stopping = backend.stopping or stopping
        backend.retry_at = now + backend.backoff
        self._drop_probe(backend)

    def _drop_probe(self, backend: Backend) -> None:
        probe, backend.probe = backend.probe, None
        if probe is not None and self.forget_probe is not None:
            self.forget_probe(probe)

    def probes_due(self, now: float) -> List[Backend]:
        """Ejected servers due a probe now (none is in flight to them)."""
        due = []
        for backend in self.backends:
            if not backend.ejected or backend.removed:
                continue
            probe = backend.probe
            if probe is not None:
                if now - probe.last_sent < self.probe_timeout:
                    continue
                self.probe_failed(backend, now)  # unanswered: back off further
            if now >= backend.retry_at:
                due.append(backend)
        return due

    def probe_failed(self, backend: Backend, now: float) -> None:
        """A probe went unanswered (or the server said it is stopping): wait twice as long for the next."""
        self._drop_probe(backend)
        backend.backoff = min(backend.backoff * 2, self.max_backoff)
        backend.retry_at = now + backend.backoff


def _in_flight(backend: Backend) -> int:
    return backend.in_flight


# -- DNS names ---------------------------------------------------------------------
def split_tcp_endpoint(endpoint: str) -> Optional[Tuple[str, int]]:
    """``(host, port)`` if ``endpoint`` is ``tcp://NAME:PORT`` with a DNS name to resolve, else None.

    IP literals (``127.0.0.1``, ``[::1]``), ``*``, a source address
    (``tcp://a;b:1``) and other transports are used as they are.
    """
    if not endpoint.startswith("tcp://") or ";" in endpoint:
        return None
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    if not sep or not host or host == "*" or not port.isdigit():
        return None
    if host.startswith("["):
        return None  # an IPv6 literal
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return host, int(port)


def tcp_endpoint(address: str, port: int) -> str:
    """The zmq endpoint of one resolved address (IPv6 in brackets)."""
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"


def addresses_of(records: Iterable[Sequence[Any]]) -> List[str]:
    """The distinct addresses in ``socket.getaddrinfo``-style records, in the order they came."""
    seen: Dict[str, None] = {}
    for record in records:
        seen.setdefault(str(record[4][0]).split("%", 1)[0], None)
    return list(seen)


class ResolvedName:
    """One ``tcp://NAME:PORT`` endpoint: the servers its addresses became, and when to look again.

    ``refresh`` is the period of re-resolution in seconds (None: never).
    """

    def __init__(self, endpoint: str, host: str, port: int, refresh: Optional[float], now: float) -> None:
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self.refresh = refresh
        #: address -> its Backend
        self.backends: Dict[str, Backend] = {}
        self.next_refresh = now + refresh if refresh else float("inf")
        self.resolving = False

    def due(self, now: float) -> bool:
        """True if a re-resolution should start now (one in progress is never doubled)."""
        return not self.resolving and now >= self.next_refresh

    def started(self, now: float) -> None:
        self.resolving = True
        if self.refresh:
            self.next_refresh = now + self.refresh

    def changes(self, addresses: Sequence[str]) -> Tuple[List[str], List[Backend]]:
        """(addresses to add, backends to remove) so that the servers match ``addresses``.

        An empty answer changes nothing: a DNS hiccup must not drop every server.
        """
        self.resolving = False
        if not addresses:
            return [], []
        wanted = set(addresses)
        added = [a for a in addresses if a not in self.backends]
        removed = [b for a, b in self.backends.items() if a not in wanted]
        for address in [a for a in self.backends if a not in wanted]:
            del self.backends[address]
        return added, removed
