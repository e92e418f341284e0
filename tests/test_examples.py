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


def test_stream_and_batch_example():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "stream_and_batch.py")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:8] == [f"square {i * i}" for i in range(8)]
    assert lines[8] == "batch [1, 2, 3] ... 1000 RemoteError"
