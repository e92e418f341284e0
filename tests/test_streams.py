"""Streams: items as they are produced, bounded buffering, early close, errors, timeouts; and batches."""
import itertools
import time

import gevent
import pytest

import zrpc

from conftest import wait_until


class Producer:
    def __init__(self):
        self.produced = 0
        self.closed_at = None

    @zrpc.stream
    def numbers(self, n=None, every=0.0):
        try:
            for i in itertools.islice(itertools.count(), n):
                if every:
                    gevent.sleep(every)
                self.produced = i + 1
                yield i
        finally:
            self.closed_at = time.monotonic()

    @zrpc.stream
    def fail_after(self, n):
        for i in range(n):
            yield i
        raise RuntimeError(f"failed after {n}")

    @zrpc.stream
    def stall(self, first, pause):
        try:
            yield first
            gevent.sleep(pause)
            yield first + 1
        finally:
            self.closed_at = time.monotonic()

    def plain_generator(self, n):
        return (i for i in range(n))

    def echo(self, x):
        return x


@pytest.fixture
def producer():
    return Producer()


def test_stream_yields_every_item_in_order(serve, client_factory, producer, bind_endpoint):
    client = client_factory(serve(producer, bind_endpoint), timeout=10)
    assert list(client.numbers(10_000)) == list(range(10_000))
    assert list(client.numbers(0)) == []
    stream = client.call("numbers", 3)
    assert isinstance(stream, zrpc.Stream)
    assert list(stream) == [0, 1, 2]


def test_items_arrive_as_they_are_produced(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10)
    started = time.monotonic()
    stream = client.numbers(3, every=0.3)
    assert next(stream) == 0
    first = time.monotonic() - started
    assert list(stream) == [1, 2]
    assert first < 0.6 < 0.8 < time.monotonic() - started  # the first item did not wait for the last


def test_returned_generators_stream_only_when_declared(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.plain_generator(3)
    assert info.value.name == "TypeError" and "cannot be sent" in info.value.msg
    client = client_factory(serve(Producer(), stream_generators=True), timeout=10)
    assert list(client.plain_generator(3)) == [0, 1, 2]


def test_slow_reader_keeps_the_producer_at_most_one_window_ahead(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10, stream_window=32)
    stream = client.numbers()  # endless
    read = 0
    ahead = []
    for _ in range(200):
        next(stream)
        read += 1
        if read % 10 == 0:
            gevent.sleep(0.01)  # a slow reader lets the producer run as far as credit allows
            ahead.append(producer.produced - read)
    stream.close()
    assert max(ahead) <= 32 + 2, ahead
    assert max(ahead) >= 16  # and credit really was granted ahead of the reader


@pytest.mark.parametrize("how", ["break", "close", "with", "del"])
def test_stopping_early_stops_the_generator_promptly(serve, client_factory, producer, how):
    client = client_factory(serve(producer, heartbeat=30), timeout=10, heartbeat=30)
    if how == "break":
        for item in client.numbers():
            if item == 5:
                break
    elif how == "close":
        stream = client.numbers()
        next(stream)
        stream.close()
    elif how == "with":
        with client.numbers() as stream:
            next(stream)
    else:
        stream = client.numbers()
        next(stream)
        del stream
    stopped_by = time.monotonic()
    # heartbeats are 30 s apart: only the explicit cancel can stop it this fast
    assert wait_until(lambda: producer.closed_at is not None, timeout=5)
    assert producer.closed_at - stopped_by < 2
    assert serve.servers[-1].calls_in_flight == 0
    assert client.echo("after") == "after"


def test_a_dead_client_process_stops_the_generator(serve, peer, producer):
    endpoint = serve(producer, heartbeat=0.3)
    proc = peer("zrpc_stream_client.py", endpoint, "0.3")
    assert producer.closed_at is None
    proc.kill()
    assert wait_until(lambda: producer.closed_at is not None, timeout=10)
    assert wait_until(lambda: serve.servers[-1].calls_in_flight == 0, timeout=5)


def test_error_mid_stream_arrives_after_the_items_already_sent(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10)
    received = []
    with pytest.raises(zrpc.RemoteError) as info:
        for item in client.fail_after(5):
            received.append(item)
    assert received == [0, 1, 2, 3, 4]
    assert (info.value.name, info.value.msg) == ("RuntimeError", "failed after 5")


def test_timeout_applies_between_items_not_to_the_whole_stream(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=1.0)
    started = time.monotonic()
    assert list(client.numbers(6, every=0.3)) == list(range(6))
    assert time.monotonic() - started > 1.0  # longer than the timeout in total, fine between items
    stream = client.with_options(timeout=0.3).stall(7, 5)
    assert next(stream) == 7
    with pytest.raises(zrpc.TimeoutExpired, match="next item of stall"):
        next(stream)
    assert wait_until(lambda: producer.closed_at is not None, timeout=5)  # and the server stopped


def test_heartbeats_keep_a_quiet_stream_alive(serve, client_factory, producer):
    client = client_factory(serve(producer, heartbeat=0.2), timeout=5, heartbeat=0.2)
    # 0.8 s between items = 4 heartbeat intervals of silence from the generator.
    assert list(client.numbers(3, every=0.8)) == [0, 1, 2]


def test_async_stream_call(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10)
    future = client.numbers.call_async(4)
    assert list(future.get(timeout=5)) == [0, 1, 2, 3]


# -- batches -------------------------------------------------------------------------

def test_batch_results_come_back_in_order_with_errors_in_their_slots(serve, client_factory, producer):
    client = client_factory(serve(producer), timeout=10)
    batch = client.batch()
    for i in range(1000):
        batch.echo(i)
    bad = batch.call("nope")
    kw = batch.call("echo", x="kw")
    unsendable = batch.echo(object())
    assert len(batch) == 1003
    results = batch.run()
    assert results[:1000] == list(range(1000))
    assert isinstance(results[bad], zrpc.RemoteError) and results[bad].name == "NameError"
    assert results[kw] == "kw"
    assert isinstance(results[unsendable], TypeError)
    assert len(batch) == 0 and batch.run() == []


def test_batch_calls_are_all_in_flight_at_once(serve, client_factory):
    calls = []

    def sleepy(i):
        calls.append(i)
        gevent.sleep(0.5)
        return i

    client = client_factory(serve({"sleepy": sleepy}), timeout=10)
    batch = client.batch()
    for i in range(50):
        batch.sleepy(i)
    started = time.monotonic()
    assert batch.run() == list(range(50))
    assert time.monotonic() - started < 2.0  # pipelined, not 50 x 0.5 s


def test_batch_honours_with_options_timeout(serve, client_factory):
    client = client_factory(serve({"sleepy": lambda s: gevent.sleep(s) or s}), timeout=10)
    batch = client.with_options(timeout=0.3).batch()
    batch.sleepy(0.01)
    batch.sleepy(3)
    fast, slow = batch.run()
    assert fast == 0.01 and isinstance(slow, zrpc.TimeoutExpired)


def test_batch_against_a_real_zerorpc_server(peer):
    from conftest import free_tcp_endpoint

    endpoint = free_tcp_endpoint()
    peer("zerorpc_batch_server.py", endpoint)
    with zrpc.Client(endpoint, timeout=10) as client:
        batch = client.batch()
        for i in range(500):
            batch.add(i, 1)
        failed = batch.fail("slot error")
        unsupported = batch.call("add", 1, b=2)
        results = batch.run()
    assert results[:500] == [i + 1 for i in range(500)]
    assert isinstance(results[failed], zrpc.RemoteError) and results[failed].msg == "slot error"
    assert isinstance(results[unsupported], zrpc.KeywordArgumentsUnsupported)
