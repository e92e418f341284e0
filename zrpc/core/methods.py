"""What a server exposes: the method table built from a user object, and its introspection.

This module owns which callables are public, which ones stream, and how a
method is described to the remote (zerorpc's ``_zerorpc_inspect`` /
``_zerorpc_args`` formats). It never touches a socket.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar

__all__ = ["stream", "is_stream", "public_methods", "service_name", "describe", "argspec", "doc"]

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
