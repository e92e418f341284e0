"""What a server exposes: the method table built from a user object, and its introspection.

This module owns which callables are public, which ones stream, and how a
method is described to the remote (zerorpc's ``_zerorpc_inspect`` /
``_zerorpc_args`` formats). It never touches a socket.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from . import protocol

__all__ = [
    "MethodTable",
    "stream",
    "is_stream",
    "public_methods",
    "service_name",
    "describe",
    "argspec",
    "doc",
]

F = TypeVar("F", bound=Callable[..., Any])

_STREAM_MARK = "__zrpc_stream__"


def stream(func: F) -> F:
    """Mark ``func`` as a stream: the iterable it returns is sent item by item.

    The function itself is returned unchanged, so it can still be called locally.
    """
    try:
        setattr(func, _STREAM_MARK, True)
    except AttributeError:  # a builtin: wrap it so the mark has somewhere to live
        original = func

        def func(*args: Any, **kwargs: Any) -> Any:  # type: ignore[no-redef]
            return original(*args, **kwargs)

        setattr(func, _STREAM_MARK, True)
    return func


def is_stream(func: Callable[..., Any]) -> bool:
    """True if ``func`` was marked with :func:`stream` (or zerorpc's ``@zerorpc.stream``)."""
    if getattr(func, _STREAM_MARK, False):
        return True
    pattern = getattr(func, "pattern", None)  # zerorpc.decorators.stream
    return type(pattern).__name__ == "ReqStream"


def service_name(methods: Any) -> str:
    """The default service name, as zerorpc computes it."""
    return getattr(methods, "__name__", None) or type(methods).__name__


def public_methods(methods: Any, exclude: Optional[set] = None) -> Dict[str, Callable[..., Any]]:
    """The callables of ``methods`` (an object, a module, a class or a dict) that may be called remotely.

    Names starting with ``_`` are never exposed. Classes found as attributes
    are skipped: calling one remotely would return an object that cannot
    cross the wire.
    """
    if isinstance(methods, Mapping):
        items = [(str(k), v) for k, v in methods.items()]
    else:
        items = []
        for k in dir(methods):
            if k.startswith("_") or (exclude and k in exclude):
                continue
            try:
                items.append((k, getattr(methods, k)))
            except Exception:  # a property that raises: not a method anyway
                continue
    table = {}
    for name, value in items:
        if name.startswith("_") or not callable(value) or inspect.isclass(value):
            continue
        table[name] = value
    return table


def _signature(func: Callable[..., Any]) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):  # some builtins have no introspectable signature
        return None


def _wire_default(value: Any) -> Any:
    """A default value as sent on the wire: itself if msgpack can carry it, else its repr."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str, bytes)) for v in value
    ):
        return list(value)
    return repr(value)


def argspec(func: Callable[..., Any]) -> Optional[List[Any]]:
    """``[args, varargs, varkw, defaults]`` like zerorpc's ``_zerorpc_args`` (getargspec layout)."""
    sig = _signature(func)
    if sig is None:
        return None
    args, defaults, varargs, varkw = [], [], None, None
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(p.name)
            if p.default is not p.empty:
                defaults.append(_wire_default(p.default))
        elif p.kind is p.VAR_POSITIONAL:
            varargs = p.name
        elif p.kind is p.VAR_KEYWORD:
            varkw = p.name
    return [args, varargs, varkw, defaults or None]


def doc(func: Callable[..., Any]) -> Optional[str]:
    """The cleaned docstring, or None."""
    text = getattr(func, "__doc__", None)
    return inspect.cleandoc(text) if isinstance(text, str) and text.strip() else None


def describe(func: Callable[..., Any]) -> Dict[str, Any]:
    """One method's entry in ``_zerorpc_inspect``.

    ``args`` and ``doc`` are zerorpc's keys; ``signature`` (the Python
    signature as text, keyword-only and variadic parameters included) and
    ``stream`` are zrpc's, ignored by zerorpc peers.
    """
    sig = _signature(func)
    args = []
    if sig is not None:
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                entry = {"name": p.name}
                if p.default is not p.empty:
                    entry["default"] = _wire_default(p.default)
                args.append(entry)
    return {
        "args": args,
        "doc": doc(func),
        "signature": str(sig) if sig is not None else "(...)",
        "stream": is_stream(func),
    }


class MethodTable:
    """The callables a server answers: the user's public methods plus zerorpc's built-ins.

    ``resolve`` turns a request's name and args (a plain call or a
    ``_zrpc_kwcall``) into the function and its arguments, so every driver
    dispatches the same way.
    """

    __slots__ = ("name", "public", "builtins", "_streams")

    def __init__(self, methods: Any, name: Optional[str] = None, exclude: Optional[set] = None) -> None:
        self.name = name or service_name(methods)
        self.public: Dict[str, Callable[..., Any]] = public_methods(methods, exclude)
        self.builtins: Dict[str, Callable[..., Any]] = {
            "_zerorpc_ping": lambda: ["pong", self.name],
            "_zerorpc_list": lambda: list(self.public),
            "_zerorpc_name": lambda: self.name,
            "_zerorpc_help": lambda method: doc(self.lookup(method)),
            "_zerorpc_args": lambda method: argspec(self.lookup(method)),
            "_zerorpc_inspect": self.inspect,
        }
        self._streams: Dict[Callable[..., Any], bool] = {f: is_stream(f) for f in self.public.values()}

    def lookup(self, method: str) -> Callable[..., Any]:
        """The public method ``method``; raises NameError(method) if there is none."""
        func = self.public.get(method)
        if func is None:
            raise NameError(method)
        return func

    def resolve(self, name: str, args: Any) -> Tuple[str, Callable[..., Any], list, dict]:
        """(method name, function, args, kwargs) of a request; NameError or TypeError if it cannot be called."""
        kwargs: dict = {}
        if name == protocol.KWCALL:
            if not (isinstance(args, list) and len(args) == 3 and isinstance(args[0], str)
                    and isinstance(args[1], list) and isinstance(args[2], dict)):
                raise TypeError("a keyword call needs args [method, [positional...], {keyword: value}]")
            name, args, kwargs = args
        if not isinstance(args, list):
            raise TypeError(f"the arguments of {name}() must be an array, got {type(args).__name__}")
        func = self.public.get(name) or self.builtins.get(name)
        if func is None:
            raise NameError(name)
        return name, func, args, kwargs

    def streams(self, func: Callable[..., Any]) -> bool:
        """True if ``func`` is a public method marked as a stream."""
        return self._streams.get(func, False)

    def inspect(self) -> Dict[str, Any]:
        """The ``_zerorpc_inspect`` reply: the service name and every method's description."""
        return {"name": self.name, "methods": {m: describe(f) for m, f in self.public.items()}}
