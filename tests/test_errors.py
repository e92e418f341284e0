"""Remote errors, timeouts and dead peers: every failure reaches the caller, nothing hangs."""
import logging
import os
import signal
import time

import gevent
import pytest

import zrpc

from conftest import free_tcp_endpoint, wait_until


class Faulty:
    def boom(self):
        raise ValueError("kaboom")

    def unsendable(self):
        return object()

    def echo(self, value):
        return value

    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds


def test_remote_exception_has_name_message_and_traceback(serve, client_factory, caplog):
    client = client_factory(serve(Faulty()), timeout=10)
    with caplog.at_level(logging.WARNING, logger="zrpc"):
        with pytest.raises(zrpc.RemoteError) as info:
            client.boom()
    err = info.value
    assert (err.name, err.msg) == ("ValueError", "kaboom")
    assert "Traceback (most recent call last)" in err.traceback and 'raise ValueError("kaboom")' in err.traceback
    assert str(err) == "ValueError: kaboom"
    assert any("boom() raised ValueError: kaboom" in r.getMessage() for r in caplog.records)


def test_tracebacks_can_be_withheld(serve, client_factory):
    client = client_factory(serve(Faulty(), send_tracebacks=False), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.boom()
    assert info.value.name == "ValueError"
    assert "Traceback" not in info.value.traceback and "kaboom" not in info.value.traceback


def test_unknown_method_is_a_name_error(serve, client_factory):
    client = client_factory(serve(Faulty()), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.nope(1)
    assert (info.value.name, info.value.msg) == ("NameError", "nope")


def test_a_result_msgpack_cannot_encode_is_a_clear_error_and_the_server_goes_on(serve, client_factory):
    client = client_factory(serve(Faulty()), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.unsendable()
    assert info.value.name == "TypeError" and "unsendable() cannot be sent" in info.value.msg
    assert client.echo("still serving") == "still serving"


def test_arguments_msgpack_cannot_encode_fail_locally_before_sending(serve, client_factory):
    client = client_factory(serve(Faulty()), timeout=10)
    with pytest.raises(TypeError, match="cannot send the arguments of echo"):
        client.echo(object())
    assert client.echo(1) == 1


def test_dead_endpoint_times_out_in_about_timeout_every_time():
    # Nothing listens here: every call must fail in ~timeout, 2000 times in a row, never wedge.
    endpoint = free_tcp_endpoint()
    timeout = 0.005
    with zrpc.Client(endpoint, timeout=timeout) as client:
        slowest = 0.0
        started = time.monotonic()
        for _ in range(2000):
            t0 = time.monotonic()
            with pytest.raises(zrpc.TimeoutExpired):
                client.echo("hello?")
            slowest = max(slowest, time.monotonic() - t0)
        total = time.monotonic() - started
    assert slowest < timeout + 0.5, f"one call took {slowest:.3f}s for a {timeout}s timeout"
    assert total < 2000 * timeout + 20
    assert len(client._session.table) == 0  # nothing left behind


def test_dead_endpoint_async_calls_time_out_too():
    with zrpc.Client(free_tcp_endpoint(), timeout=0.2) as client:
        futures = [client.echo.call_async(i) for i in range(50)]
        assert gevent.wait(futures, timeout=30)
        assert all(isinstance(f.exception, zrpc.TimeoutExpired) for f in futures)


def test_timeout_message_names_the_endpoint_and_the_duration(serve, client_factory):
    endpoint = serve(Faulty())
    client = client_factory(endpoint, timeout=0.2)
    with pytest.raises(zrpc.TimeoutExpired) as info:
        client.sleep(5)
    assert "0.2s" in str(info.value) and endpoint in str(info.value) and "sleep()" in str(info.value)


def test_timeout_cancels_the_work_on_the_server(client_factory):
    finished = []

    def slow():
        try:
            gevent.sleep(10)
        finally:
            finished.append(True)

    server = zrpc.Server({"slow": slow})
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        client = client_factory(endpoint, timeout=0.2)
        with pytest.raises(zrpc.TimeoutExpired):
            client.slow()
        assert wait_until(lambda: finished == [True], timeout=5)
        assert server.calls_in_flight == 0
    finally:
        server.close()


@pytest.mark.parametrize("heartbeat", [0.5])
def test_server_killed_mid_call_gives_lost_remote_never_a_hang(peer, heartbeat):
    endpoint = free_tcp_endpoint()
    proc = peer("zrpc_server.py", endpoint, str(heartbeat))
    with zrpc.Client(endpoint, timeout=30, heartbeat=heartbeat) as client:
        assert client.add(1, 2) == 3
        future = client.sleep.call_async(20)
        gevent.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((zrpc.LostRemote, zrpc.TimeoutExpired)) as info:
            future.get(timeout=15)
        assert isinstance(info.value, zrpc.LostRemote)  # heartbeats notice well before the timeout
        assert time.monotonic() - started < 4 * heartbeat + 1
        # And later calls to the dead server time out cleanly.
        with pytest.raises(zrpc.TimeoutExpired):
            client.with_options(timeout=0.3).add(1, 1)


def test_stream_from_a_killed_server_fails_with_lost_remote(peer):
    endpoint = free_tcp_endpoint()
    proc = peer("zrpc_server.py", endpoint, "0.3")
    with zrpc.Client(endpoint, timeout=30, heartbeat=0.3) as client:
        stream = client.ticks(1000, 0.05)
        assert next(stream) == 0
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(zrpc.LostRemote):
            for _ in range(1000):
                next(stream)
