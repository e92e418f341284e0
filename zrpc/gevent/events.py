"""One-way events on gevent: Publisher/Subscriber (PUB/SUB) and Pusher/Puller (PUSH/PULL).

Wire-compatible with zerorpc's classes of the same names: one frame per
event, ``[header, name, args]``, and no reply. What an event means (which
method, keyword arguments, filtering, sequence gaps) is decided by
:mod:`zrpc.core.events`; this module only moves frames and runs methods
in greenlets.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, List, Mapping, Optional

import gevent
import gevent.pool
import zmq
from gevent.event import Event

from ..core.errors import ClosedError, TimeoutExpired
from ..core.events import EventDispatcher, EventEncoder
from ..core.protocol import printable
from ..core.session import DEFAULT_MAX_MESSAGE_SIZE, Tracer
from .transport import Transport

__all__ = ["Publisher", "Subscriber", "Pusher", "Puller"]

log = logging.getLogger("zrpc.events")

_SUBSCRIBE = 1  # first byte of an XPUB subscription message (0 unsubscribes)


class _EventSocket:
    """One zmq socket of one-way events: endpoints, options, ``with`` blocks, clean closing."""

    _socket_type: int = zmq.PUSH
    #: Seconds zmq may still spend delivering events already queued when closing.
    CLOSE_LINGER = 0.5

    def __init__(self, context: Optional[zmq.Context], socket_options: Optional[Mapping[int, Any]],
                 max_message_size: Optional[int]) -> None:
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket_options = dict(socket_options or {})
        self._transport = Transport(self._socket_type, self._on_frames, self._context, max_message_size,
                                    self._setup_socket)
        self._closed = False

    def _setup_socket(self, sock: zmq.Socket) -> None:
        for option, value in self._socket_options.items():
            sock.setsockopt(option, value)

    def _on_frames(self, frames: List[Any]) -> None:
        pass

    def bind(self, endpoint: str) -> str:
        """Listen on ``endpoint`` (tcp://, ipc://; ``tcp://127.0.0.1:*`` picks a port); returns it."""
        return self._transport.bind(endpoint)

    def connect(self, endpoint: str) -> str:
        """Connect to ``endpoint`` (zmq reconnects by itself); may be called several times."""
        return self._transport.connect(endpoint)

    @property
    def endpoints(self) -> List[str]:
        """Every endpoint bound or connected, in order."""
        return list(self._transport.endpoints)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, linger: Optional[float] = None) -> None:
        """Release the socket; events already queued get ``linger`` seconds (default CLOSE_LINGER) to go out.

        Never blocks longer than that; idempotent.
        """
        if self._closed:
            return
        self._closed = True
        linger = self.CLOSE_LINGER if linger is None else linger
        self._transport.close(linger)
        if self._own_context:
            # term() returns once queues are flushed or linger ran out; in a thread, so the hub runs on.
            try:
                gevent.get_hub().threadpool.spawn(self._context.term).get(timeout=linger + 1)
            except gevent.Timeout:
                log.warning("zmq did not finish closing within %gs", linger + 1)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _Sender(_EventSocket):
    """``sender.method(*args, **kwargs)`` or ``sender.emit("method", ...)`` sends one event."""

    def __init__(self, sequenced: bool, context: Optional[zmq.Context],
                 socket_options: Optional[Mapping[int, Any]], trace: Optional[Tracer]) -> None:
        super().__init__(context, socket_options, None)
        self._encoder = EventEncoder(sequenced=sequenced, trace=trace)

    def emit(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Send event ``method(*args, **kwargs)``. Keyword arguments need zrpc receivers.

        A zerorpc receiver has no method ``_zrpc_kwcall`` and only logs an
        error on its side: one-way events cannot tell the sender.
        """
        raise NotImplementedError

    def __getattr__(self, method: str) -> Callable[..., None]:
        if method.startswith("_"):
            raise AttributeError(method)

        def send(*args: Any, **kwargs: Any) -> None:
            self.emit(method, *args, **kwargs)

        send.__name__ = method
        return send


class Publisher(_Sender):
    """Send events to every connected Subscriber (zerorpc's Publisher; PUB semantics).

    Never blocks: an event is queued for each subscriber, and dropped for a
    subscriber whose queue is full (the high-water mark, ``zmq.SNDHWM``,
    1000 by default) or that is not connected yet. Each event carries a
    sequence number, so a zrpc Subscriber counts what it missed
    (``subscriber.dropped``). ``subscriptions`` / :meth:`wait_for_subscribers`
    tell whether anyone listens yet (ZeroMQ's slow joiner: a subscriber that
    just connected misses what is sent before its subscription arrives).
    """

    _socket_type = zmq.XPUB  # a PUB that also reads subscriptions; SUB peers cannot tell the difference

    def __init__(self, *, context: Optional[zmq.Context] = None,
                 socket_options: Optional[Mapping[int, Any]] = None, trace: Optional[Tracer] = None) -> None:
        options = {zmq.XPUB_VERBOSER: 1}  # every subscribe and unsubscribe, so they can be counted
        options.update(socket_options or {})
        super().__init__(True, context, options, trace)
        self._subscriptions = 0
        self._subscribed = Event()
        self._transport.start()

    def _on_frames(self, frames: List[Any]) -> None:
        message = bytes(frames[-1][:1])
        if message == b"\x01":
            self._subscriptions += 1
        elif message == b"\x00" and self._subscriptions:
            self._subscriptions -= 1
        self._subscribed.set()

    @property
    def subscriptions(self) -> int:
        """Subscriptions currently held by connected subscribers (one per zrpc or zerorpc Subscriber)."""
        return self._subscriptions

    @property
    def sent(self) -> int:
        """Events published so far."""
        return self._encoder.sent

    def wait_for_subscribers(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` subscriptions are held, for up to ``timeout`` seconds; True if so."""
        deadline = time.monotonic() + timeout
        while self._subscriptions < count and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._subscribed.clear()
            self._subscribed.wait(remaining)
        return self._subscriptions >= count

    def emit(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Publish ``method(*args, **kwargs)`` to every subscriber; never blocks.

        Raises TypeError if a value cannot be packed, ClosedError once closed.
        """
        if self._closed:
            raise ClosedError("the publisher is closed")
        payload = self._encoder.encode(method, args, kwargs)
        if not self._transport.try_send((payload,)):  # PUB never refuses; it drops per subscriber
            log.warning("could not publish %s(): the socket refused the event", printable(method))


class Pusher(_Sender):
    """Send each event to one connected Puller, in turn (zerorpc's Pusher; PUSH semantics).

    An event waits while no puller is connected or every puller's queue is
    full, for up to ``timeout`` seconds, then :meth:`emit` raises
    TimeoutExpired and nothing was sent: a pusher never blocks forever.
    ZMQ_IMMEDIATE is set, so events are only queued for pullers that are
    connected (not for an endpoint still trying to connect).
    """

    _socket_type = zmq.PUSH

    def __init__(self, *, timeout: float = 30.0, context: Optional[zmq.Context] = None,
                 socket_options: Optional[Mapping[int, Any]] = None, trace: Optional[Tracer] = None) -> None:
        if timeout is None or not timeout > 0:
            raise ValueError("a Pusher needs a timeout of more than 0 seconds (it never waits forever)")
        options = {zmq.IMMEDIATE: 1}
        options.update(socket_options or {})
        super().__init__(False, context, options, trace)
        self.timeout = float(timeout)

    def emit(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Push ``method(*args, **kwargs)`` to one puller; wait at most ``timeout`` seconds for one.

        Raises TimeoutExpired if no puller took it in time (then it was not
        sent), TypeError if a value cannot be packed, ClosedError once closed.
        """
        if self._closed:
            raise ClosedError("the pusher is closed")
        payload = self._encoder.encode(method, args, kwargs)
        try:
            self._transport.send((payload,), time.monotonic() + self.timeout, self.timeout)
        except TimeoutExpired:
            raise TimeoutExpired(self.timeout, f"pushing {printable(method)}(): no puller is connected, or "
                                               f"all of them are full") from None


class _Receiver(_EventSocket):
    """Runs ``methods.name(*args, **kwargs)`` in a greenlet for each event received."""

    def __init__(self, methods: Any, names: Optional[Iterable[str]], pool_size: Optional[int],
                 max_message_size: Optional[int], context: Optional[zmq.Context],
                 socket_options: Optional[Mapping[int, Any]], trace: Optional[Tracer],
                 fallback: Optional[Callable[[str, list, dict], Any]]) -> None:
        if pool_size is not None and pool_size < 1:
            raise ValueError("pool_size must be at least 1 (or None for no limit)")
        if methods is None:
            methods = _own_methods(self)  # subclass style; {} for a plain Subscriber(fallback=...)
        self._dispatcher = EventDispatcher(methods, names, max_message_size, trace, fallback)
        self._pool = gevent.pool.Pool(pool_size)
        self._stopped = Event()
        super().__init__(context, socket_options, max_message_size)

    # -- counters -----------------------------------------------------------
    @property
    def received(self) -> int:
        """Events handed to a method so far."""
        return self._dispatcher.received

    @property
    def skipped(self) -> int:
        """Events left aside because their name is not among ``names``."""
        return self._dispatcher.skipped

    @property
    def unknown(self) -> int:
        """Events naming no method of this receiver (each such name is logged once)."""
        return self._dispatcher.unknown

    @property
    def invalid(self) -> int:
        """Frames that were not valid events (logged)."""
        return self._dispatcher.invalid

    @property
    def running(self) -> int:
        """Event handlers running now."""
        return len(self._pool)

    # -- life cycle ------------------------------------------------------------
    def start(self) -> Any:
        """Receive in the background of the current gevent hub; returns at once."""
        if self._closed or self._stopped.is_set():
            raise RuntimeError("a stopped receiver cannot be started again; make a new one")
        self._transport.start()
        return self

    def run(self) -> None:
        """Receive until :meth:`stop` or :meth:`close` is called (from another greenlet or a signal)."""
        self.start()
        self._stopped.wait()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop receiving (the socket closes); let running handlers finish for up to ``timeout`` s, then kill them.

        Events still queued in the socket are lost with it (ZeroMQ has no way
        to hand them back).
        """
        self._stopped.set()
        if not self._closed:
            super().close(0)
        current = gevent.getcurrent()
        others = [task for task in self._pool if task is not current]  # stop() may run in a handler
        if others and len(gevent.joinall(others, timeout=timeout)) < len(others):
            gevent.killall([task for task in others if not task.dead], block=True, timeout=1.0)

    def close(self, linger: Optional[float] = None) -> None:
        """Stop receiving and kill running handlers at once; release the socket."""
        self.stop(0)

    # -- receiving ---------------------------------------------------------------
    def _on_frames(self, frames: List[Any]) -> None:
        delivery = self._dispatcher.receive(frames[-1], time.monotonic())
        if delivery is None:
            return
        # With pool_size reached this waits for a free slot: the reader stops
        # reading, so the backlog stays in zmq's queue, bounded by its
        # high-water mark (PUB then drops, PUSH then waits), never in memory.
        self._pool.spawn(self._handle, delivery)

    @staticmethod
    def _handle(delivery: Any) -> None:
        try:
            delivery.func(*delivery.args, **delivery.kwargs)
        except Exception:
            log.exception("event %s() raised (nobody to tell: events have no reply)", printable(delivery.name))


def _own_methods(receiver: "_Receiver") -> dict:
    """Subclass style (``class Handler(zrpc.Subscriber)``): its public methods, not the base class's."""
    base = set(dir(_Receiver)) | set(dir(Subscriber)) | set(dir(Puller))
    return {name: getattr(receiver, name) for name in dir(type(receiver))
            if not name.startswith("_") and name not in base and callable(getattr(receiver, name, None))}


class Subscriber(_Receiver):
    """Receive every event Publishers send (zerorpc's Subscriber; SUB semantics).

    ``methods`` (an object, module or dict; or the subclass itself) names
    the handlers; ``names`` limits the events handled to some of them (the
    rest still travel, and are skipped here). ``fallback(name, args,
    kwargs)`` handles every event that has no method of its own (a bridge,
    a logger; ``zrpc subscribe`` uses it). Each event runs in a greenlet
    of its own, at most ``pool_size`` at once (further events wait in zmq's
    queue, where PUB drops beyond the high-water mark). ``dropped`` counts
    events a zrpc Publisher sent that never arrived (logged, at most every
    10 s).
    """

    _socket_type = zmq.SUB

    def __init__(self, methods: Any = None, *, names: Optional[Iterable[str]] = None,
                 pool_size: Optional[int] = None, max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
                 context: Optional[zmq.Context] = None, socket_options: Optional[Mapping[int, Any]] = None,
                 trace: Optional[Tracer] = None,
                 fallback: Optional[Callable[[str, list, dict], Any]] = None) -> None:
        super().__init__(methods, names, pool_size, max_message_size, context, socket_options, trace, fallback)

    def _setup_socket(self, sock: zmq.Socket) -> None:
        super()._setup_socket(sock)
        # Everything, like zerorpc: the header comes before the name on the
        # wire, so no zmq prefix can select names; ``names`` filters here.
        sock.setsockopt(zmq.SUBSCRIBE, b"")

    @property
    def dropped(self) -> int:
        """Events missing from zrpc publishers' sequences: PUB dropped them at the high-water mark."""
        return self._dispatcher.dropped


class Puller(_Receiver):
    """Receive events Pushers send, each event going to one puller (zerorpc's Puller; PULL semantics).

    Each event runs ``methods.name(*args, **kwargs)`` (or ``fallback(name,
    args, kwargs)`` when there is no such method) in a greenlet of its
    own, at most ``pool_size`` at once; further events wait in zmq's queue,
    and once that is full, pushers wait too. There is no ``names`` filter:
    an event pushed to this puller that it skipped would be lost.
    """

    _socket_type = zmq.PULL

    def __init__(self, methods: Any = None, *, pool_size: Optional[int] = None,
                 max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
                 context: Optional[zmq.Context] = None, socket_options: Optional[Mapping[int, Any]] = None,
                 trace: Optional[Tracer] = None,
                 fallback: Optional[Callable[[str, list, dict], Any]] = None) -> None:
        super().__init__(methods, None, pool_size, max_message_size, context, socket_options, trace, fallback)
