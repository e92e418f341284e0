"""The examples in examples/ run in the suite, so they never rot."""
import os
import sys

from gevent import subprocess

from conftest import ROOT, free_tcp_endpoint


def test_hello_server_and_client_examples():
    endpoint = free_tcp_endpoint()
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "hello_server.py"), endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert server.stdout.readline().startswith("serving on " + endpoint)
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "hello_client.py"), endpoint],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[:6] == [
            "Hello, zrpc!",
            "30",
            "['Monty Python', 'Brian Python']",
            "50.0",
            "[0, 1, 2, 3, 4]",
            "remote ValueError: boom",
        ]
        assert lines[6].startswith("timeout: timeout expired after 0.2s calling sleep()")
    finally:
        server.kill()
        server.communicate(timeout=10)


def run_example(name):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_stream_example():
    lines = run_example("stream.py")
    assert lines[:8] == [f"square {i * i}" for i in range(8)]
    # break stopped the generator before the next call; the full stream then ran to its end
    assert lines[8] == "generator stopped"
    assert lines[9:] == ["generator stopped", str(sum(i * i for i in range(1000)))]


def test_batch_example():
    assert run_example("batch.py") == ["batch [1, 2, 3] ... 1000 RemoteError"]


def test_secure_example():
    assert run_example("secure.py") == [
        "admin: 127.0.0.1 admin 42",
        "user: 127.0.0.1 user -> PermissionError: admins only",
        "stranger: refused",
    ]


def test_aio_hello_example():
    lines = run_example("aio_hello.py")
    assert lines[:8] == ["3", "0", "1", "2", "3", "4", "HELLO", str(sum(2 * i for i in range(1000)))]
    assert lines[8].startswith("timeout: timeout expired after 0.2s calling nap()")
    assert lines[9] == "nap cancelled"


def test_events_example():
    assert run_example("events.py") == [
        "left: ACME 12.5 EUR",
        "left: INIT 3 USD",
        "alerts: market closes in 5 minutes",
        "left missed 0 events",
        "resized ['img0.png', 'img1.png', 'img2.png', 'img3.png', 'img4.png', 'img5.png']",
        "lonely pusher: timeout expired after 0.2s pushing resize(): no puller is connected, or all of them are full",
    ]


def test_from_zerorpc_example():
    assert run_example("from_zerorpc.py") == ["3", "7", "[3, 2, 1]", "req-1", "RemoteError NameError"]


def test_interceptors_example():
    assert run_example("interceptors.py") == [
        "acme has 3 apples",
        "globex has 3 pears",
        "refused: PermissionError: count() needs a tenant header",
        "slow_report: timed out after 0.5s, and so did its call to the backend",
        "calls: [('count', 'error'), ('count', 'ok'), ('count', 'ok')]",
        'zrpc_server_calls_total{method="count",outcome="ok"} 2.0',
        'zrpc_server_calls_total{method="count",outcome="error"} 1.0',
    ]


def test_workers_example():
    # two processes behind one endpoint; the worker sees the client's address; a clean stop
    assert run_example("workers.py") == ["2 worker processes served the calls",
                                         "a worker sees the caller at 127.0.0.1", "served: 21 calls", "stopped"]
