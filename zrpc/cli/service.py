"""What a remote service offers, as the CLI lists it: its name and a description of each method.

Read from zerorpc's built-ins: ``_zerorpc_inspect`` first (zrpc adds
``signature`` and ``stream`` to zerorpc's ``args`` and ``doc``), else the
older ``_zerorpc_name`` / ``_zerorpc_list`` / ``_zerorpc_help`` /
``_zerorpc_args``. The writing side is :mod:`zrpc.core.methods`. This module
formats nothing for the terminal and decides no exit status.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

__all__ = ["MethodDescription", "describe_service"]


class MethodDescription:
    """One remote method: ``name``, ``signature`` text ("(a, b=1)", "(...)" if unknown), ``doc``, ``stream``."""

    __slots__ = ("name", "signature", "doc", "stream")

    def __init__(self, name: str, signature: str, doc: Optional[str], stream: Optional[bool]) -> None:
        self.name = name
        self.signature = signature
        self.doc = doc
        self.stream = stream

    @property
    def title(self) -> str:
        """``name(signature)``, marked ``[stream]`` when the server says it streams."""
        return f"{self.name}{self.signature}" + ("  [stream]" if self.stream else "")

    @property
    def summary(self) -> str:
        """The first line of the doc, or ""."""
        return self.doc.strip().splitlines()[0] if self.doc and self.doc.strip() else ""


def describe_service(client: Any, only: Optional[str] = None) -> Tuple[str, List[MethodDescription]]:
    """(service name, methods sorted by name), or only the method ``only``.

    Raises :class:`zrpc.RemoteError` (NameError) if ``only`` is not a method of
    the service. zerorpc 0.6.3 on Python 3.11 fails ``_zerorpc_inspect`` and
    ``_zerorpc_args`` (it uses inspect.getargspec), so the fallback works with
    names and docs alone.
    """
    import zrpc

    inspect_failure: Optional[Exception] = None
    try:
        info = client.call("_zerorpc_inspect")
    except zrpc.RemoteError as exc:
        info, inspect_failure = None, exc
    if isinstance(info, dict) and isinstance(info.get("methods"), dict):
        methods = []
        for name, entry in info["methods"].items():
            name = _text(name)
            if only is not None and name != only:
                continue
            entry = entry if isinstance(entry, dict) else {}
            signature = entry.get("signature")
            if not isinstance(signature, str):
                signature = _signature_from_args(entry.get("args"))
            doc = entry.get("doc")
            methods.append(MethodDescription(name, signature, _text(doc) if doc else None,
                                             entry.get("stream")))
        if only is not None and not methods:
            raise _no_such_method(only)
        return _text(info.get("name") or "?"), sorted(methods, key=lambda m: m.name)
    return _describe_from_builtins(client, only, inspect_failure)


def _describe_from_builtins(client: Any, only: Optional[str],
                            inspect_failure: Optional[Exception]) -> Tuple[str, List[MethodDescription]]:
    """The description from _zerorpc_name, _zerorpc_list, _zerorpc_help and _zerorpc_args.

    ``_zerorpc_args`` is asked for the first method alone: if it fails the way
    ``_zerorpc_inspect`` did, the server cannot describe arguments at all and
    is not asked again for each method (zerorpc logs a traceback for each).
    """
    batch = client.batch()
    batch.call("_zerorpc_name")
    names = client.call("_zerorpc_list")
    names = sorted(_text(n) for n in names) if isinstance(names, list) else []
    if only is not None:
        if only not in names:
            raise _no_such_method(only)
        names = [only]
    for name in names:
        batch.call("_zerorpc_help", name)
    if names:
        batch.call("_zerorpc_args", names[0])
    service, *docs_and_first = batch.run()
    docs, specs = docs_and_first[:len(names)], docs_and_first[len(names):]
    if names[1:]:
        if _same_failure(specs[0], inspect_failure):
            specs += [specs[0]] * (len(names) - 1)
        else:
            for name in names[1:]:
                batch.call("_zerorpc_args", name)
            specs += batch.run()
    methods = [
        MethodDescription(
            name,
            _signature_from_argspec(spec) if not isinstance(spec, Exception) else "(...)",
            _text(doc) if doc and not isinstance(doc, Exception) else None,
            None,
        )
        for name, doc, spec in zip(names, docs, specs)
    ]
    return _text(service if not isinstance(service, Exception) else "?"), methods


def _same_failure(result: Any, failure: Optional[Exception]) -> bool:
    """``result`` is a remote error of the same type and message as ``failure``."""
    import zrpc

    return (isinstance(result, zrpc.RemoteError) and isinstance(failure, zrpc.RemoteError)
            and (result.name, result.msg) == (failure.name, failure.msg))


def _no_such_method(name: str) -> Exception:
    import zrpc

    return zrpc.RemoteError("NameError", f"the server has no method {name!r}")


def _signature_from_args(args: Any) -> str:
    """zerorpc's generic ``args`` list ([{"name": .., "default": ..}]) -> "(a, b=1)"."""
    if not isinstance(args, list):
        return "(...)"
    parts = []
    for arg in args:
        if isinstance(arg, dict) and "name" in arg:
            part = _text(arg["name"])
            if "default" in arg:
                part += f"={arg['default']!r}"
            parts.append(part)
        else:
            parts.append(_text(arg))
    return f"({', '.join(parts)})"


def _signature_from_argspec(spec: Any) -> str:
    """getargspec layout [args, varargs, varkw, defaults] -> "(a, b=1, *rest, **kw)"."""
    if not isinstance(spec, (list, tuple)) or len(spec) < 4 or not isinstance(spec[0], (list, tuple)):
        return "(...)"
    names, varargs, varkw, defaults = spec[0], spec[1], spec[2], spec[3] or []
    parts = [_text(n) for n in names]
    first_default = len(parts) - len(defaults)
    for i, value in enumerate(defaults):
        if 0 <= first_default + i < len(parts):
            parts[first_default + i] += f"={value!r}"
    if varargs:
        parts.append(f"*{_text(varargs)}")
    if varkw:
        parts.append(f"**{_text(varkw)}")
    return f"({', '.join(parts)})"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
