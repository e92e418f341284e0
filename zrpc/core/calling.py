"""The shape of the calling API, shared by every driver: remote methods as attributes, batches.

``client.add(1, 2)`` is ``client.call("add", 1, 2)``; a batch queues calls
and hands them to the driver together. What a call returns (a value, a
gevent Future, an awaitable) is the driver's business: this module only
names methods and queues calls. No I/O, no event loop.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["remote_method_name", "RemoteMethod", "Caller", "OptionsView", "CallQueue"]


def remote_method_name(name: str) -> str:
    """``name`` if it may be a remote method; AttributeError for private names (but zerorpc's built-ins)."""
    if name.startswith("_") and not name.startswith("_zerorpc_"):
        raise AttributeError(name)
    return name


class RemoteMethod:
    """A remote method bound to a caller: calling it is ``caller.call(name, ...)``."""

    __slots__ = ("_caller", "_name")

    def __init__(self, caller: Any, name: str) -> None:
        self._caller = caller
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._caller.call(self._name, *args, **kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> Any:
        """Start the call and return the driver's future at once."""
        return self._caller.call_async(self._name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name}>"


class Caller:
    """The calling API a driver's Client and its ``with_options`` views share.

    A driver subclass defines ``call`` (how a caller waits) and its
    ``_batch_class``; ``call_async`` hands the call to ``_client._start``
    (through the client's interceptors, if it has any).
    """

    _client: Any
    _timeout: Optional[float]
    _headers: Optional[Dict[str, Any]] = None  # validated; None: no user headers
    #: The driver's Batch: ``_batch_class(caller)``.
    _batch_class: Callable[[Any], Any]

    def batch(self) -> Any:
        """A Batch that sends queued calls together (see the driver's ``Batch``)."""
        return self._batch_class(self)

    def call_async(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Start calling ``method`` and return the driver's future at once."""
        client = self._client
        if client._interceptors:
            return client._intercepted(method, args, kwargs, self._timeout, self._headers, True)
        return client._start(method, args, kwargs, self._timeout, self._headers, async_=True)

    def __getattr__(self, method: str) -> RemoteMethod:
        return RemoteMethod(self, remote_method_name(method))


class OptionsView:
    """``client.with_options(...)``: the same client, other call options."""

    def __init__(self, client: Any, timeout: Optional[float], headers: Optional[Dict[str, Any]] = None) -> None:
        self._client = client
        self._timeout = timeout
        self._headers = headers


class CallQueue:
    """Calls queued by a batch: ``queue.add(1, 2)`` or ``queue.call("add", 1, 2)`` return the index."""

    def __init__(self) -> None:
        self._calls: List[Tuple[str, tuple, Dict[str, Any]]] = []

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> int:
        """Queue one call; return its index in the results."""
        self._calls.append((method, args, kwargs))
        return len(self._calls) - 1

    def __getattr__(self, method: str) -> Callable[..., int]:
        remote_method_name(method)
        return lambda *args, **kwargs: self.call(method, *args, **kwargs)

    def __len__(self) -> int:
        return len(self._calls)

    def _take(self) -> List[Tuple[str, tuple, Dict[str, Any]]]:
        """The queued calls, in order; the queue is empty afterwards."""
        calls, self._calls = self._calls, []
        return calls
