"""OpenTelemetry tracing for zrpc (``pip install zrpc[otel]``: needs ``opentelemetry-api``).

    client = zrpc.Client(endpoint, interceptors=[zrpc.tracing.ClientTracing()])
    server = zrpc.Server(service, interceptors=[zrpc.tracing.ServerTracing()])

Each call gets a span on each side: a CLIENT span around the request, and a
SERVER span, its child, around the method. The trace context travels in the
request's headers as W3C ``traceparent`` (and ``tracestate``), through the
globally configured propagator (W3C trace context by default), so zerorpc
peers just ignore it. The server span is the current span while the method
runs: a zrpc call the method makes continues the same trace. Which SDK and
exporter record the spans is the application's choice
(``opentelemetry-sdk``); without one, the API's no-op tracer costs little.

Not to be confused with the ``trace=`` option of Client/Server (a hook that
sees every protocol event, used by ``zrpc --debug``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["ClientTracing", "ServerTracing"]

_NAME = "zrpc"


def _attributes(method: str) -> dict:
    return {"rpc.system": "zrpc", "rpc.method": method}


def _end(span: Any, call: Any) -> None:
    span.set_attribute("zrpc.outcome", call.outcome)
    if call.outcome != "ok":
        if call.error is not None:
            span.record_exception(call.error)
        span.set_status(Status(StatusCode.ERROR, f"{call.outcome}: {call.error}" if call.error else call.outcome))
    span.end()


class ClientTracing:
    """A client interceptor: a CLIENT span per call, its context sent as ``traceparent``."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(_NAME, tracer_provider=tracer_provider)

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        span = self._tracer.start_span(call.method, kind=SpanKind.CLIENT, attributes=_attributes(call.method))
        propagate.inject(call.headers, context=trace.set_span_in_context(span))
        call.add_done_callback(lambda done: _end(span, done))  # runs whatever happens next
        return proceed()


class ServerTracing:
    """A server interceptor: a SERVER span per call, child of the caller's ``traceparent``, current
    while the method runs (and until the reply is sent)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(_NAME, tracer_provider=tracer_provider)

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        parent = propagate.extract(call.headers)
        attributes = _attributes(call.method)
        if call.peer_address:
            attributes["net.peer.ip"] = call.peer_address
        span = self._tracer.start_span(call.method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token: Optional[object] = context.attach(trace.set_span_in_context(span, parent))

        def done(over: Any) -> None:
            _end(span, over)
            try:
                context.detach(token)  # the call's greenlet or task, where it was attached
            except Exception:
                pass

        call.add_done_callback(done)
        return proceed()
