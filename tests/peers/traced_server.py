"""A zrpc server traced with the OpenTelemetry SDK, in its own process, for tests/test_observability.py.

    python tests/peers/traced_server.py ENDPOINT

Binds ENDPOINT, prints READY, serves until killed. Its spans go to an
in-memory exporter; ``spans()`` returns them (name, kind, trace and span ids
as hex, parent span id), so the test can join them with its own.
``relay(a, b)`` calls this server's own ``add`` through a traced client: the
trace must go on through it.
"""
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import zrpc
from zrpc.tracing import ClientTracing, ServerTracing

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


def describe(span):
    context = span.get_span_context()
    return {"name": span.name, "kind": span.kind.name, "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
            "outcome": span.attributes.get("zrpc.outcome")}


def main():
    endpoint = sys.argv[1]
    own = zrpc.Client(endpoint, timeout=10, interceptors=[ClientTracing(PROVIDER)])

    def add(a, b):
        return a + b

    def relay(a, b):
        return own.add(a, b)

    def spans():
        return [describe(span) for span in EXPORTER.get_finished_spans()]

    server = zrpc.Server({"add": add, "relay": relay, "spans": spans},
                         interceptors=[ServerTracing(PROVIDER)])
    server.bind(endpoint)
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    sys.exit(main())
