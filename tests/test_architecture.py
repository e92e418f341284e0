"""The layering promises (core without gevent) and the bugs found while moving code into the core."""
import logging
import os
import shutil
import subprocess as std_subprocess
import sys
import threading
import venv

import gevent
import msgpack
import pytest
import zmq

import zrpc
from zrpc.core import protocol

from conftest import PEERS, ROOT, free_tcp_endpoint, run_python, spawn_peer, stop_peer, wait_until


def test_core_imports_in_a_virtualenv_without_gevent_or_pyzmq(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # Only msgpack is made importable: the venv has no gevent, greenlet or zmq.
    deps = tmp_path / "deps"
    shutil.copytree(os.path.dirname(msgpack.__file__), deps / "msgpack")
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('gevent') is None and importlib.util.find_spec('zmq') is None\n"
        "import zrpc.core, zrpc.core.server_session, zrpc.core.client_session\n"
        "import zrpc\n"
        "assert zrpc.ProtocolError and zrpc.RemoteError\n"
        "assert 'gevent' not in sys.modules and 'zmq' not in sys.modules\n"
        "print('ok')\n"
    )
    out = std_subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60,
                             env={"PYTHONPATH": f"{ROOT}{os.pathsep}{deps}", "PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_zrpc_error_derives_from_zrpc_error():
    for name in ("RemoteError", "TimeoutExpired", "LostRemote", "KeywordArgumentsUnsupported",
                 "ClosedError", "ProtocolError"):
        assert issubclass(getattr(zrpc, name), zrpc.ZrpcError), name


def test_a_grant_the_socket_could_not_take_is_sent_later_not_lost(serve, client_factory):
    """Drop the first _zpc_more attempt on a real socket: the stream must still complete."""

    @zrpc.stream
    def count(n):
        return range(n)

    client = client_factory(serve({"count": count}), timeout=10, stream_window=4)
    transport = client._transports[0]
    real_try_send = transport.try_send
    refused = []

    def refuse_first_grant(frames):
        if not refused and protocol.MORE.encode() in bytes(frames[-1]):
            refused.append(True)
            return False  # as if the socket were full at that moment
        return real_try_send(frames)

    transport.try_send = refuse_first_grant
    assert list(client.count(50)) == list(range(50))
    assert refused == [True]


def test_the_last_reply_before_a_server_process_exits_arrives(client_factory):
    for attempt in range(8):
        endpoint = free_tcp_endpoint()
        proc = spawn_peer("zrpc_quit_server.py", endpoint)
        try:
            client = client_factory(endpoint, timeout=10, heartbeat=None)
            assert client.quit(attempt) == attempt
            assert proc.wait(timeout=10) == 0
        finally:
            stop_peer(proc)


def test_a_socket_that_can_never_read_again_logs_once_and_stops(caplog):
    context = zmq.Context()
    client = zrpc.Client("tcp://127.0.0.1:1", context=context, heartbeat=None)
    reader = client._transports[0]._reader
    # A terminating context makes every receive fail with ETERM until the socket closes.
    terminator = threading.Thread(target=context.term)
    with caplog.at_level(logging.ERROR, logger="zrpc"):
        terminator.start()
        sock = client._transports[0]._sock

        def terminating() -> bool:
            try:
                sock.getsockopt(zmq.EVENTS)
            except zmq.ContextTerminated:
                return True
            return False

        assert wait_until(terminating, timeout=10)
        client._transports[0]._readable.set()  # wake the reader as a poll event would
        assert wait_until(lambda: reader.dead, timeout=10)
    client.close()
    terminator.join(10)
    assert not terminator.is_alive()
    failures = [r for r in caplog.records if "receive failed" in r.getMessage()]
    assert len(failures) == 1 and "for good" in failures[0].getMessage()


def test_library_warnings_do_not_reach_stderr_without_logging_configured(tmp_path):
    code = (
        "import zrpc\n"
        "s = zrpc.Server({}); ep = s.bind('tcp://127.0.0.1:*'); s.start()\n"
        "c = zrpc.Client(ep, timeout=5)\n"
        "try:\n"
        "    c.nope()\n"
        "except zrpc.RemoteError:\n"
        "    pass\n"
        "c.close(); s.close(); print('done')\n"
    )
    out = run_python(code)
    assert out.returncode == 0 and out.stdout.strip() == "done"
    assert out.stderr == ""  # the server logged "unknown method" at WARNING: the NullHandler kept it


def test_a_client_used_from_another_thread_says_what_to_do(serve, client_factory):
    client = client_factory(serve({"add": lambda a, b: a + b}), timeout=5)
    errors = []

    def other_thread():
        try:
            client.add(1, 2)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "another thread" in str(errors[0]) and "one Client per thread" in str(errors[0])
    assert client.add(1, 2) == 3


def test_socket_options_are_set_before_connect_and_trace_sees_events(serve, client_factory):
    seen = []
    endpoint = serve({"add": lambda a, b: a + b}, trace=lambda d, h, n, a: seen.append(("server", d, n)))
    client = client_factory(endpoint, timeout=5, socket_options={zmq.SNDHWM: 7},
                            trace=lambda d, h, n, a: seen.append(("client", d, n)))
    assert client._transports[0]._sock.getsockopt(zmq.SNDHWM) == 7
    assert client.add(1, 2) == 3
    assert seen == [("client", "send", "add"), ("server", "recv", "add"),
                    ("server", "send", "OK"), ("client", "recv", "OK")]
