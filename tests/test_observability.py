"""Ready interceptors over real sockets: Prometheus metrics scraped over HTTP, the access log,
``zrpc serve --metrics-port/--access-log``, and one OpenTelemetry trace across two processes."""
import logging
import os
import signal
import subprocess as std_subprocess
import sys
import time
import urllib.request

import gevent
import msgpack
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import zrpc
from zrpc.accesslog import AccessLog
from zrpc.metrics import ServerMetrics, serve_metrics

from conftest import free_tcp_endpoint, run_python, wait_until
from test_cli import cli_env, start_serve, zrpc_argv
from test_interceptors import Service


def scrape(port):
    """GET /metrics over HTTP: {(name, labels): value} of every sample."""
    # A thread of the hub's pool: the HTTP server answers from its own thread meanwhile.
    text = gevent.get_hub().threadpool.apply(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_are_scraped_over_http(serve, client_factory, raw_dealer):
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry=registry)
    endpoint = serve(Service(), interceptors=[metrics], pool_size=1, max_pending=1, heartbeat=0.2)
    metrics.watch(serve.servers[-1])
    http = serve_metrics(0, registry=registry)
    try:
        port = http.server_port
        client = client_factory(endpoint, timeout=10, heartbeat=0.2)
        assert [client.add(i, 1) for i in range(3)] == [1, 2, 3]
        with pytest.raises(zrpc.RemoteError):
            client.boom()
        assert list(client.count(4)) == [0, 1, 2, 3]
        # One call running, one waiting for the pool (pool_size=1).
        running = client.sleep.call_async(1.0)
        queued = client.sleep.call_async(0)
        assert wait_until(lambda: serve.servers[-1].stats["queued"] == 1)
        busy = scrape(port)
        assert busy[("zrpc_server_calls_running", ())] == 1
        assert busy[("zrpc_server_calls_queued", ())] == 1
        with pytest.raises(zrpc.ServerBusy):
            client.add(1, 1)
        assert running.get(10) == 1.0 and queued.get(10) == 0
        # A message that is not msgpack, and a caller that goes silent (no heartbeats).
        sock = raw_dealer(endpoint)
        sock.send_multipart([b"", b"\xc1 not msgpack"])
        sock.send_multipart([b"", msgpack.packb([{"message_id": b"m1", "v": 3}, "sleep", [30]])])
        assert wait_until(lambda: serve.servers[-1].stats["callers_lost"] == 1, timeout=5)
        samples = scrape(port)
    finally:
        http.shutdown()
    assert samples[("zrpc_server_calls_total", (("method", "add"), ("outcome", "ok")))] == 3
    assert samples[("zrpc_server_calls_total", (("method", "boom"), ("outcome", "error")))] == 1
    assert samples[("zrpc_server_calls_total", (("method", "count"), ("outcome", "ok")))] == 1
    assert samples[("zrpc_server_calls_total", (("method", "sleep"), ("outcome", "cancelled")))] == 1
    assert samples[("zrpc_server_call_duration_seconds_count", (("method", "add"),))] == 3
    assert samples[("zrpc_server_call_duration_seconds_bucket", (("le", "+Inf"), ("method", "sleep")))] == 3
    assert samples[("zrpc_server_bad_messages_total", ())] == 1
    assert samples[("zrpc_server_callers_lost_total", ())] == 1
    assert samples[("zrpc_server_calls_running", ())] == 0
    assert samples[("zrpc_server_calls_refused_busy_total", ())] == 1


def test_the_access_log_has_one_escaped_line_per_call(serve, client_factory, caplog):
    endpoint = serve({"add": lambda a, b: a + b, "bad\nname": lambda: 1, "boom": Service().boom},
                     interceptors=[AccessLog()])
    client = client_factory(endpoint, timeout=10)
    with caplog.at_level(logging.INFO, logger="zrpc.access"):
        assert client.add(1, 2) == 3
        assert client.call("bad\nname") == 1
        with pytest.raises(zrpc.RemoteError):
            client.boom()
        assert wait_until(lambda: len([r for r in caplog.records if r.name == "zrpc.access"]) == 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "zrpc.access"]
    assert lines[0].startswith("peer=127.0.0.1 user=- method=add outcome=ok duration=")
    assert " in=" in lines[0] and " out=" in lines[0]
    assert "\n" not in lines[1] and "method=bad\\nname outcome=ok" in lines[1]
    assert lines[2].endswith("error=ValueError") and "outcome=error" in lines[2]


def test_zrpc_serve_serves_metrics_and_an_access_log():
    endpoint = free_tcp_endpoint()
    metrics_port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    server = start_serve("--bind", endpoint, "--metrics-port", str(metrics_port), "--access-log",
                         "cli_service:Service")
    try:
        server.wait_for(server.err, f"metrics on http://127.0.0.1:{metrics_port}/metrics")
        with zrpc.Client(endpoint, timeout=10) as client:
            assert client.echo("hi") == [["hi"], {}]
        line = server.wait_for(server.err, "zrpc.access")
        assert "method=echo outcome=ok" in line and "peer=127.0.0.1" in line
        samples = scrape(metrics_port)
        assert samples[("zrpc_server_calls_total", (("method", "echo"), ("outcome", "ok")))] == 1
        assert server.finish(signal.SIGTERM) == 0, server.stderr
    finally:
        server.kill()


def test_zrpc_serve_metrics_port_in_use_is_a_usage_error():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = std_subprocess.run(zrpc_argv("serve", "--bind", free_tcp_endpoint(), "--metrics-port", str(port),
                                            "time"), capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.returncode == 2, proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr


def test_the_core_and_drivers_never_import_prometheus_or_opentelemetry():
    code = (
        "import sys, zrpc, zrpc.gevent, zrpc.aio, zrpc.accesslog\n"
        "server = zrpc.Server({'add': lambda a, b: a + b})\n"
        "endpoint = server.bind('tcp://127.0.0.1:*'); server.start()\n"
        "with zrpc.Client(endpoint, timeout=10, headers={'k': 'v'}) as client: assert client.add(1, 2) == 3\n"
        "server.close()\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry')))\n"
        "print(bad)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_one_trace_across_a_client_process_and_a_server_process(peer):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from zrpc.tracing import ClientTracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    endpoint = free_tcp_endpoint()
    peer("traced_server.py", endpoint)
    with zrpc.Client(endpoint, timeout=10, interceptors=[ClientTracing(provider)]) as client:
        assert client.add(1, 2) == 3
        assert client.relay(2, 3) == 5
        with zrpc.Client(endpoint, timeout=10) as untraced:
            remote = untraced.spans()
    local = [span for span in exporter.get_finished_spans()]
    assert [(s.name, s.kind.name) for s in local] == [("add", "CLIENT"), ("relay", "CLIENT")]
    by_name = {}
    for span in remote:
        by_name.setdefault((span["name"], span["kind"]), []).append(span)
    for client_span in local:
        context = client_span.get_span_context()
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        served = [s for s in by_name[(client_span.name, "SERVER")] if s["trace_id"] == trace_id]
        assert len(served) == 1, (client_span.name, remote)
        assert served[0]["parent_id"] == span_id and served[0]["outcome"] == "ok"
    # relay's own call to add went on in the same trace: server(relay) -> client(add) -> server(add).
    relay_trace = format(local[1].get_span_context().trace_id, "032x")
    relay_server = [s for s in by_name[("relay", "SERVER")] if s["trace_id"] == relay_trace][0]
    inner_client = [s for s in by_name[("add", "CLIENT")] if s["trace_id"] == relay_trace]
    assert len(inner_client) == 1 and inner_client[0]["parent_id"] == relay_server["span_id"]
    inner_server = [s for s in by_name[("add", "SERVER")] if s["trace_id"] == relay_trace]
    assert len(inner_server) == 1 and inner_server[0]["parent_id"] == inner_client[0]["span_id"]


def test_calls_cancelled_while_queued_are_counted(serve, client_factory, caplog):
    """A call shed from the pool's queue (its caller's deadline passed) never reaches the interceptors:
    server.stats and the metrics count it, and the server logs it."""
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry=registry)
    endpoint = serve(Service(), interceptors=[metrics], pool_size=1)
    server = metrics.watch(serve.servers[-1])
    http = serve_metrics(0, registry=registry)
    try:
        client = client_factory(endpoint, timeout=10)
        running = client.sleep.call_async(1.0)
        assert wait_until(lambda: server.stats["running"] == 1)
        with caplog.at_level(logging.INFO, logger="zrpc.server"):
            with pytest.raises(zrpc.TimeoutExpired):
                client.with_options(timeout=0.3).sleep(0)  # waits in line behind sleep(1.0), then gives up
            assert wait_until(lambda: server.stats["cancelled_queued"] == 1, timeout=5)
        assert running.get(10) == 1.0
        samples = scrape(http.server_port)
    finally:
        http.shutdown()
    assert samples[("zrpc_server_calls_cancelled_queued_total", ())] == 1
    assert samples[("zrpc_server_calls_total", (("method", "sleep"), ("outcome", "ok")))] == 1
    assert server.stats["cancelled_queued"] == 1 and server.stats["queued"] == 0
    assert any("cancelled before it ran" in r.getMessage() for r in caplog.records)


def test_aio_calls_cancelled_while_queued_are_counted():
    import asyncio

    import zrpc.aio
    from test_aio import run

    async def main():
        async def sleep(seconds):
            await asyncio.sleep(seconds)
            return seconds

        async with zrpc.aio.Server({"sleep": sleep}, pool_size=1) as server:
            endpoint = server.bind("tcp://127.0.0.1:*")
            server.start()
            async with zrpc.aio.Client(endpoint, timeout=10) as client:
                running = asyncio.ensure_future(client.sleep(1.0))
                await asyncio.sleep(0.1)
                with pytest.raises(zrpc.TimeoutExpired):
                    await client.with_options(timeout=0.3).sleep(0)
                assert await running == 1.0
                assert server.stats["cancelled_queued"] == 1

    run(main())
