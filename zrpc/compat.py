"""zerorpc's API on zrpc: ``import zrpc.compat as zerorpc`` and typical zerorpc code runs unchanged.

What it maps (the README's "Migrating from zerorpc" section lists what it
does not):

* ``Server(methods, name, context, pool_size, heartbeat)`` and
  ``Client(connect_to, context, timeout, heartbeat, passive_heartbeat)``
  with zerorpc's positional order; a call's ``timeout=``, ``async_=`` (or
  ``**{"async": True}``) and ``slots=`` keyword arguments are call options,
  as in zerorpc: ``async_`` returns a gevent ``AsyncResult``. Any other
  keyword argument goes to the remote method (zrpc servers take them).
* ``stream``, ``rep``, ``Publisher``, ``Subscriber``, ``Pusher``, ``Puller``
  and the exceptions (also as ``zrpc.compat.exceptions``).
* A Client's attribute is a remote method unless zerorpc's Client has it
  (``close``, ``connect``, ``bind``) or zrpc's own code needs it (``closed``,
  ``max_message_size``, ``CLOSE_LINGER``).
* ``Context`` with ``register_middleware`` and zerorpc's hook names, run
  by interceptors (zrpc's own hook API, see "Interceptors, deadlines and
  metrics") at the same points of a call as zerorpc runs them. The context
  is read at every call, so middleware registered later applies too, as
  in zerorpc. A real ``zerorpc.Context`` works in its place.

zerorpc's ``Context`` is also its zmq context; here it is one too, but
only a context passed explicitly is used for sockets: without one, each
Client and Server owns its zmq context (so closing it flushes its last
replies), and the middleware comes from ``Context.get_instance()``.
"""
from __future__ import annotations

import logging
import sys
import traceback as traceback_module
import types
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import gevent
import gevent.event
import zmq

from . import gevent as _driver
from .core import protocol
from .core.calling import RemoteMethod, remote_method_name
from .core.errors import LostRemote, RemoteError, TimeoutExpired
from .core.intercept import MAX_HEADERS_SIZE, validate_headers
from .core.methods import stream
from .core.protocol import printable

__all__ = [
    "Server", "Client", "Publisher", "Subscriber", "Pusher", "Puller",
    "stream", "rep", "Context", "Event", "fork_task_context",
    "RemoteError", "TimeoutExpired", "LostRemote", "exceptions",
]

log = logging.getLogger("zrpc.compat")

#: zerorpc's ``zerorpc.exceptions`` module: ``zerorpc.exceptions.RemoteError`` and
#: ``from zrpc.compat.exceptions import RemoteError`` work as with zerorpc.
exceptions = types.ModuleType(__name__ + ".exceptions", "zerorpc's exceptions: RemoteError, TimeoutExpired, LostRemote.")
exceptions.RemoteError, exceptions.TimeoutExpired, exceptions.LostRemote = RemoteError, TimeoutExpired, LostRemote
exceptions.__all__ = ["LostRemote", "TimeoutExpired", "RemoteError"]
sys.modules[exceptions.__name__] = exceptions

#: zerorpc 0.6.3's hook names, in the order its Context declares them.
HOOKS = (
    "resolve_endpoint", "load_task_context", "get_task_context",
    "server_before_exec", "server_after_exec", "server_inspect_exception",
    "client_handle_remote_error", "client_before_request", "client_after_request",
    "client_patterns_list",
)


def rep(functor: Callable[..., Any]) -> Callable[..., Any]:
    """zerorpc's ``@zerorpc.rep``: a plain request/reply method (the default), returned unchanged."""
    return functor


class Event:
    """What zerorpc's hooks receive for a request or a reply: ``name``, ``args``, ``header``."""

    __slots__ = ("name", "args", "header", "identity")

    def __init__(self, name: str, args: Any, header: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.args = args
        self.header = {} if header is None else header
        self.identity = None

    def __repr__(self) -> str:
        return f"<Event {printable(self.name)} {self.args!r}>"


class Context(zmq.Context):
    """zerorpc's Context: a zmq context that also holds middleware (``register_middleware``)."""

    _instance: Optional["Context"] = None

    def __init__(self) -> None:
        super().__init__()
        # pyzmq turns unknown attribute assignments into socket options: use __dict__.
        self.__dict__["_middlewares"] = []
        self.__dict__["_hooks"] = {name: [] for name in HOOKS}

    @staticmethod
    def get_instance() -> "Context":
        """The process-wide default context (zerorpc's singleton)."""
        if Context._instance is None:
            Context._instance = Context()
        return Context._instance

    def register_middleware(self, middleware: Any) -> int:
        """Register an object (or a dict) whose attributes named like hooks become hooks; returns how many."""
        return _register(self.__dict__["_hooks"], self.__dict__["_middlewares"], middleware)


def _register(hooks: Dict[str, List[Callable[..., Any]]], middlewares: List[Any], middleware: Any) -> int:
    middlewares.append(middleware)
    count = 0
    for name in hooks:
        functor = getattr(middleware, name, None)
        if functor is None and isinstance(middleware, Mapping):
            functor = middleware.get(name)
        if functor is not None:
            hooks[name].append(functor)
            count += 1
            if name == "client_patterns_list":
                log.warning("middleware %r: the client_patterns_list hook is never called by zrpc.compat "
                            "(zrpc has no pluggable reply patterns)", middleware)
    return count


def fork_task_context(functor: Callable[..., Any], context: Any = None) -> Callable[..., Any]:
    """zerorpc's helper: ``functor`` wrapped to run with the task context of the caller (for greenlets it spawns)."""
    hooks = _hooks_of(_middleware_of(context))
    header = _task_context(hooks)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for load in hooks.get("load_task_context", ()):
            load(header)
        return functor(*args, **kwargs)

    return wrapped


def _middleware_of(context: Any) -> Any:
    """Where a node finds its middleware: the context it was given, else zerorpc's default one."""
    return context if context is not None else Context.get_instance()


def _hooks_of(context: Any) -> Dict[str, List[Callable[..., Any]]]:
    """The hook lists of a compat or a real zerorpc Context (anything else has none)."""
    hooks = getattr(context, "__dict__", {}).get("_hooks")
    return hooks if isinstance(hooks, dict) else {}


def _task_context(hooks: Mapping[str, List[Callable[..., Any]]]) -> Dict[str, Any]:
    header: Dict[str, Any] = {}
    for functor in hooks.get("get_task_context", ()):
        header.update(functor())
    return header


def _zmq_context(context: Any) -> Optional[zmq.Context]:
    return context if isinstance(context, zmq.Context) else None


def _resolve(context: Any, endpoint: str) -> str:
    for functor in _hooks_of(context).get("resolve_endpoint", ()):
        endpoint = functor(endpoint)
    return endpoint


def _error_event(exc: BaseException, header: Dict[str, Any]) -> Event:
    if isinstance(exc, RemoteError):
        return Event("ERR", (exc.name, exc.msg, exc.traceback), header)
    return Event("ERR", (type(exc).__name__, str(exc), "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))), header)


# -- server side ---------------------------------------------------------------------
class _Interceptor:
    """An interceptor that runs the hooks named ``_names`` of a middleware context, if it has any."""

    _names: tuple

    def __init__(self, context: Any) -> None:
        self._context = context

    def _hooks(self) -> Optional[Dict[str, List[Callable[..., Any]]]]:
        hooks = _hooks_of(self._context)
        return hooks if any(hooks.get(name) for name in self._names) else None


class _ServerHooks(_Interceptor):
    """Runs zerorpc's server hooks around a call, as a zrpc server interceptor.

    ``server_after_exec`` runs once the reply is sent (for a stream, after
    its STREAM_DONE), from the call's done callback; zerorpc runs it just
    before sending, which only differs for a hook that changes the reply.
    """

    _names = ("load_task_context", "server_before_exec", "server_after_exec", "server_inspect_exception")

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        hooks = self._hooks()
        if hooks is None:
            return proceed()
        header = dict(call.header)
        for functor in hooks.get("load_task_context", ()):
            functor(header)
        # A list, as zerorpc's hooks get (msgpack's arrays): a hook may change it in place, or
        # replace it, and the method runs with what it holds then.
        request = Event(call.method, list(call.args), header)
        try:
            for functor in hooks.get("server_before_exec", ()):
                functor(request)
            call.args = tuple(request.args)
            result = proceed()
        except Exception as exc:
            _inspect(hooks, request, exc)
            raise
        call.add_done_callback(lambda done: self._done(hooks, request, done))
        return result

    @staticmethod
    def _done(hooks: Mapping[str, List[Callable[..., Any]]], request: Event, call: Any) -> None:
        if call.outcome == "ok":
            reply = (Event("STREAM_DONE", None, _task_context(hooks)) if call.stream
                     else Event("OK", (call.result,), _task_context(hooks)))
            for functor in hooks.get("server_after_exec", ()):
                functor(request, reply)
        elif call.outcome == "error" and call.error is not None:
            _inspect(hooks, request, call.error)


def _inspect(hooks: Mapping[str, List[Callable[..., Any]]], request: Event, exc: BaseException,
             replies: bool = True) -> None:
    """``server_inspect_exception``; ``replies=False`` for events, whose hooks get no reply event."""
    task_context = _task_context(hooks)
    reply = _error_event(exc, task_context) if replies else None
    exc_infos = [type(exc), exc, exc.__traceback__]
    for functor in hooks.get("server_inspect_exception", ()):
        functor(request, reply, task_context, exc_infos)


class _Resolving:
    """zerorpc's ``bind``/``connect``: the ``resolve_endpoint`` hooks rewrite the endpoint first."""

    _middleware: Any

    def bind(self, endpoint: str, resolve: bool = True) -> str:
        return super().bind(_resolve(self._middleware, endpoint) if resolve else endpoint)  # type: ignore[misc]

    def connect(self, endpoint: str, resolve: bool = True) -> str:
        return super().connect(_resolve(self._middleware, endpoint) if resolve else endpoint)  # type: ignore[misc]


class Server(_Resolving, _driver.Server):
    """zerorpc's ``Server(methods=None, name=None, context=None, pool_size=None, heartbeat=5)``.

    Any of zrpc.Server's keyword options may follow (``interceptors`` run
    inside zerorpc's hooks). ``class MyService(zerorpc.Server)`` serves its
    own public methods, as in zerorpc.
    """

    def __init__(self, methods: Any = None, name: Optional[str] = None, context: Any = None,
                 pool_size: Optional[int] = None, heartbeat: Optional[float] = 5, **options: Any) -> None:
        self._middleware = _middleware_of(context)
        interceptors = [_ServerHooks(self._middleware), *options.pop("interceptors", ())]
        super().__init__(self if methods is None else methods, name, heartbeat=heartbeat, pool_size=pool_size,
                         context=_zmq_context(context), interceptors=interceptors, **options)


# -- client side ---------------------------------------------------------------------
#: The header keys of the protocol: a request's own, never taken from the hooks' header.
_PROTOCOL_KEYS = ("message_id", "v", "response_to")


def _outgoing_header(header: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The keys of a request event's header to send: any msgpack value, as in zerorpc (zrpc's own
    ``headers`` take scalars only); the protocol's keys are the request's own, ``zrpc_*`` are refused."""
    user = {key: value for key, value in header.items() if key not in _PROTOCOL_KEYS}
    if not user:
        return None
    validate_headers(dict.fromkeys(user))  # the key rules
    try:
        size = len(protocol.encode(user, "", None))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"the task context or request header cannot be sent (msgpack: {exc}): "
                        f"{printable(user, 200)}") from None
    if size > MAX_HEADERS_SIZE:
        raise ValueError(f"the task context and request header take {size} bytes, over the limit of "
                         f"{MAX_HEADERS_SIZE}")
    return user


class _ClientHooks(_Interceptor):
    """Runs zerorpc's client hooks around a call, as a zrpc client interceptor."""

    _names = ("get_task_context", "client_before_request", "client_after_request", "client_handle_remote_error")

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._session: Any = None  # the client's ClientSession, set once it has one

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        hooks = self._hooks()
        if hooks is None or self._session is None:
            return proceed()
        # zerorpc makes the request event first: client_before_request sees, in event.header, the
        # id the request then goes out with, and the header keys it adds are sent (any msgpack value).
        message_id = self._session.next_message_id()
        header = _task_context(hooks)
        header.update(protocol.new_header(message_id))
        request = Event(call.method, tuple(call.args), header)
        for functor in hooks.get("client_before_request", ()):
            functor(request)
        call._message_id = message_id
        call._wire_headers = _outgoing_header(request.header)
        try:
            result = proceed()
        except Exception as exc:
            raise self._failed(hooks, request, exc) from None
        if call.async_:
            return self._future(hooks, request, result)
        return self._settled(hooks, request, result)

    def _settled(self, hooks: Mapping[str, List[Callable[..., Any]]], request: Event, result: Any) -> Any:
        if isinstance(result, _driver.Stream):
            return self._stream(hooks, request, result)
        self._after(hooks, request, _reply(request, "OK", (result,)), None)
        return result

    def _failed(self, hooks: Mapping[str, List[Callable[..., Any]]], request: Event,
                exc: BaseException) -> BaseException:
        """zerorpc's order: handle_remote_error may swap a RemoteError, then after_request sees the outcome."""
        reply = None
        if isinstance(exc, RemoteError):
            reply = _error_event(exc, _reply_header(request))
            for functor in hooks.get("client_handle_remote_error", ()):
                replacement = functor(reply)
                if replacement:
                    exc = replacement
        self._after(hooks, request, reply, exc)
        return exc

    @staticmethod
    def _after(hooks: Mapping[str, List[Callable[..., Any]]], request: Event, reply: Optional[Event],
               exc: Optional[BaseException]) -> None:
        for functor in hooks.get("client_after_request", ()):
            functor(request, reply, exc)

    def _future(self, hooks: Mapping[str, List[Callable[..., Any]]], request: Event, future: Any) -> Any:
        """An AsyncResult that gets the call's outcome once the hooks ran on it, in a greenlet of its
        own (as zerorpc does): a hook may block, and one that raises fails the AsyncResult."""
        outcome = gevent.event.AsyncResult()

        def settle() -> None:
            try:
                try:
                    value = future.get()
                except Exception as exc:
                    raise self._failed(hooks, request, exc) from None
                outcome.set(self._settled(hooks, request, value))
            except Exception as exc:
                outcome.set_exception(exc)

        gevent.spawn(settle)
        return outcome

    def _stream(self, hooks: Mapping[str, List[Callable[..., Any]]], request: Event, items: Any) -> Iterator[Any]:
        try:
            for item in items:
                yield item
        except Exception as exc:
            raise self._failed(hooks, request, exc) from None
        finally:
            items.close()
        self._after(hooks, request, _reply(request, "STREAM_DONE", None), None)


def _reply_header(request: Event) -> Dict[str, Any]:
    """A reply event's header as the client hooks see it: the reply's own message id is not kept."""
    return {"v": protocol.VERSION, "response_to": request.header.get("message_id")}


def _reply(request: Event, name: str, args: Any) -> Event:
    return Event(name, args, _reply_header(request))


def _untimed_stream(state: Any) -> Any:
    """A stream of a compat client: as in zerorpc, the call's timeout bounds the wait for its first
    item only; later items may take any time, and the heartbeats still detect a dead server."""
    state.call.timeout = None
    return _driver.Stream(state)


class _RemoteMethod(RemoteMethod):
    """``client.name``: calling it is zerorpc's call (``timeout=``, ``async_=`` ... are options)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._caller._compat_call(self._name, args, kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> Any:
        """zrpc's ``call_async``: the keyword arguments all go to the remote method."""
        return _driver.Client.call_async(self._caller, self._name, *args, **kwargs)


class _Remote:
    """A zrpc.Client attribute that zerorpc code may use as a remote method's name (zerorpc's
    Client has only close/connect/bind/disconnect/debug): on a compat Client it is one."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, client: Any, owner: Optional[type] = None) -> Any:
        return self if client is None else _RemoteMethod(client, self._name)


#: zerorpc's call options, taken out of a call's keyword arguments.
_CALL_OPTIONS = ("timeout", "async_", "async", "slots")


class Client(_Resolving, _driver.Client):
    """zerorpc's ``Client(connect_to=None, context=None, timeout=30, heartbeat=5, passive_heartbeat=False)``.

    ``client.add(1, 2)``, ``client("add", 1, 2)``; per call, zerorpc's
    options ``timeout=``, ``async_=True`` (or ``**{"async": True}``: a
    gevent AsyncResult is returned) and ``slots=`` (ignored: zrpc's
    ``stream_window`` bounds a stream's buffer). Other keyword arguments go
    to the remote method. zrpc.Client's keyword options may follow.
    The timeout bounds a stream's wait for its first item only, as in zerorpc.
    zrpc.Client's public attributes that zerorpc lacks (``timeout``,
    ``call``, ``batch``, ``with_options`` ...) are remote methods here, as in
    zerorpc; ``zrpc.Client.with_options(client, ...)`` gives zrpc's calling API on this client.
    """

    _stream_handle = staticmethod(_untimed_stream)

    batch, call, call_async, endpoints = _Remote(), _Remote(), _Remote(), _Remote()
    heartbeat, stream_window, timeout, with_options = _Remote(), _Remote(), _Remote(), _Remote()

    def __init__(self, connect_to: Any = None, context: Any = None, timeout: Optional[float] = 30,
                 heartbeat: Optional[float] = 5, passive_heartbeat: bool = False, **options: Any) -> None:
        self._middleware = _middleware_of(context)
        hooks = _ClientHooks(self._middleware)
        interceptors = [hooks, *options.pop("interceptors", ())]
        super().__init__(None, timeout=timeout, heartbeat=heartbeat, passive_heartbeat=passive_heartbeat,
                         context=_zmq_context(context), interceptors=interceptors, **options)
        hooks._session = self._session
        if connect_to:
            for endpoint in [connect_to] if isinstance(connect_to, str) else connect_to:
                self.connect(endpoint)

    def _compat_call(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """zerorpc's call: ``timeout``/``async_``/``async``/``slots`` are options, the rest goes to the method."""
        native = _driver.Client
        if not any(option in kwargs for option in _CALL_OPTIONS):
            return native.call(self, method, *args, **kwargs)
        timeout = kwargs.pop("timeout", self._timeout)
        asynchronous = bool(kwargs.pop("async_", False)) | bool(kwargs.pop("async", False))
        kwargs.pop("slots", None)
        view = native.with_options(self, timeout=timeout)
        if asynchronous:
            return view.call_async(method, *args, **kwargs)
        return view.call(method, *args, **kwargs)

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._compat_call(method, args, kwargs)

    def __getattr__(self, method: str) -> _RemoteMethod:
        return _RemoteMethod(self, remote_method_name(method))


# -- events --------------------------------------------------------------------------
class _Sending:
    """zerorpc's senders: ``sender(method, *args)``, and the task context in every event's header."""

    def _init_sending(self, context: Any) -> None:
        self._middleware = _middleware_of(context)
        self._encoder.extra_header = lambda: _task_context(_hooks_of(self._middleware))

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.emit(method, *args, **kwargs)  # type: ignore[attr-defined]


class Publisher(_Resolving, _Sending, _driver.Publisher):
    """zerorpc's ``Publisher(context=None)``."""

    def __init__(self, context: Any = None, **options: Any) -> None:
        super().__init__(context=_zmq_context(context), **options)
        self._init_sending(context)


class Pusher(_Resolving, _Sending, _driver.Pusher):
    """zerorpc's ``Pusher(context=None)``; an event that no puller takes within ``timeout`` (30 s) raises TimeoutExpired."""

    def __init__(self, context: Any = None, **options: Any) -> None:
        super().__init__(context=_zmq_context(context), **options)
        self._init_sending(context)


class _Receiving:
    """zerorpc's receivers: ``receiver(method, *args)`` runs a method here, and the server hooks
    run around each event received (with no reply event)."""

    _middleware: Any

    def __call__(self, method: str, *args: Any) -> Any:
        """zerorpc's direct call: run ``method`` at once, with no hooks; NameError if there is none."""
        return self._dispatcher.methods.lookup(method)(*args)  # type: ignore[attr-defined]

    def _handle(self, delivery: Any) -> None:  # type: ignore[override]
        hooks = _hooks_of(self._middleware)
        func = delivery.func

        def run(*args: Any, **kwargs: Any) -> None:
            header = dict(delivery.header)
            for functor in hooks.get("load_task_context", ()):
                functor(header)
            event = Event(delivery.name, list(args), header)
            try:
                for functor in hooks.get("server_before_exec", ()):
                    functor(event)
                func(*event.args, **kwargs)
                for functor in hooks.get("server_after_exec", ()):
                    functor(event, None)
            except Exception as exc:
                _inspect(hooks, event, exc, replies=False)
                raise  # the receiver logs it, as for any event

        super()._handle(delivery._replace(func=run))  # type: ignore[misc]


class Subscriber(_Resolving, _Receiving, _driver.Subscriber):
    """zerorpc's ``Subscriber(methods=None, context=None)``."""

    def __init__(self, methods: Any = None, context: Any = None, **options: Any) -> None:
        self._middleware = _middleware_of(context)
        super().__init__(methods, context=_zmq_context(context), **options)


class Puller(_Resolving, _Receiving, _driver.Puller):
    """zerorpc's ``Puller(methods=None, context=None)``."""

    def __init__(self, methods: Any = None, context: Any = None, **options: Any) -> None:
        self._middleware = _middleware_of(context)
        super().__init__(methods, context=_zmq_context(context), **options)
