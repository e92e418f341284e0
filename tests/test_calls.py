"""Plain calls over real sockets: arguments, keyword arguments, async, concurrency, pools, life cycle."""
import time

import gevent
import gevent.event
import pytest

import zrpc

from conftest import wait_until


class Calc:
    """A calculator."""

    def add(self, a, b=0):
        """Add two numbers.

        Longer description.
        """
        return a + b

    def search(self, first_name="", *, last_name="", timeout=None):
        return {"first_name": first_name, "last_name": last_name, "timeout": timeout}

    def echo(self, value):
        return value

    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def _private(self):
        return "never exposed"


def test_call_styles_and_types(serve, client_factory, bind_endpoint):
    client = client_factory(serve(Calc(), bind_endpoint), timeout=10)
    assert client.add(10, 20) == 30
    assert client.call("add", 1, 2) == 3
    value = {"s": "text", "b": b"\x00\xff", "l": [1, 2.5, None, True], "n": -(2 ** 40)}
    assert client.echo(value) == value


def test_keyword_arguments_reach_the_method_even_one_named_timeout(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=10)
    assert client.search(last_name="Python") == {"first_name": "", "last_name": "Python", "timeout": None}
    # A method's own `timeout` argument is just an argument: call options live in with_options().
    assert client.search("Monty", last_name="Python", timeout=99)["timeout"] == 99
    assert client.add(1, b=41) == 42
    with pytest.raises(zrpc.RemoteError) as info:
        client.add(1, c=2)
    assert info.value.name == "TypeError" and "c" in info.value.msg


def test_with_options_sets_the_timeout_without_touching_method_arguments(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=10)
    fast = client.with_options(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(zrpc.TimeoutExpired):
        fast.sleep(5)
    assert time.monotonic() - started < 3
    assert fast.add(2, 2) == 4
    assert client.with_options(timeout=None).sleep(0.05) == 0.05


def test_private_names_are_never_exposed(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=10)
    with pytest.raises(zrpc.RemoteError) as info:
        client.call("_private")
    assert info.value.name == "NameError"
    assert "_private" not in client._zerorpc_list()


def test_servers_accept_dicts_modules_and_subclasses(serve, client_factory):
    import math

    client = client_factory(serve({"double": lambda x: 2 * x}), timeout=10)
    assert client.double(21) == 42
    client = client_factory(serve(math), timeout=10)
    assert client.sqrt(16) == 4.0

    class Service(zrpc.Server):
        def hello(self):
            return "hi"

    service = Service(heartbeat=None)
    try:
        endpoint = service.bind("tcp://127.0.0.1:*")
        service.start()
        client = client_factory(endpoint, timeout=10)
        assert client.hello() == "hi"
        assert client._zerorpc_list() == ["hello"]
    finally:
        service.close()


def test_async_calls_return_gevent_futures(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=10)
    futures = [client.add.call_async(i, i) for i in range(100)]
    futures.append(client.call_async("add", 1, b=1))
    assert gevent.wait(futures, timeout=10) and all(f.ready() for f in futures)
    assert [f.get() for f in futures] == [2 * i for i in range(100)] + [2]
    failing = client.call_async("nope")
    with pytest.raises(zrpc.RemoteError):
        failing.get(timeout=10)


def test_1000_concurrent_one_second_calls_finish_together(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=30)
    started = time.monotonic()
    futures = [client.sleep.call_async(1) for _ in range(1000)]
    gevent.joinall(futures, timeout=20, raise_error=True)
    elapsed = time.monotonic() - started
    assert [f.get() for f in futures] == [1] * 1000
    assert elapsed < 3.0, f"1000 concurrent 1 s calls took {elapsed:.2f}s"


def test_many_greenlets_share_one_client(serve, client_factory):
    client = client_factory(serve(Calc()), timeout=10)
    results = {}

    def worker(n):
        results[n] = [client.add(n, i) for i in range(50)]

    gevent.joinall([gevent.spawn(worker, n) for n in range(20)], timeout=30, raise_error=True)
    assert results == {n: [n + i for i in range(50)] for n in range(20)}


def test_pool_size_bounds_running_calls_and_queues_the_rest(serve, client_factory):
    running = []
    peak = []
    release = gevent.event.Event()

    def work(i):
        running.append(i)
        peak.append(len(running))
        release.wait(10)
        running.remove(i)
        return i

    endpoint = serve({"work": work}, pool_size=3)
    client = client_factory(endpoint, timeout=20)
    futures = [client.work.call_async(i) for i in range(10)]
    assert wait_until(lambda: len(running) == 3)
    assert serve.servers[-1].calls_in_flight == 10  # 3 running, 7 in line, none dropped
    release.set()
    gevent.joinall(futures, timeout=10, raise_error=True)
    assert sorted(f.get() for f in futures) == list(range(10))
    assert max(peak) == 3


def test_pool_queue_does_not_starve_heartbeats_of_running_calls(serve, client_factory):
    # One slot, heartbeat 0.2 s: a 1.5 s call and a queued one both survive many heartbeat intervals.
    endpoint = serve(Calc(), pool_size=1, heartbeat=0.2)
    client = client_factory(endpoint, timeout=10, heartbeat=0.2)
    futures = [client.sleep.call_async(0.75) for _ in range(2)]
    gevent.joinall(futures, timeout=10, raise_error=True)
    assert [f.get() for f in futures] == [0.75, 0.75]


def test_several_endpoints_tcp_and_ipc(tmp_path, client_factory):
    server = zrpc.Server(Calc())
    try:
        tcp = server.bind("tcp://127.0.0.1:*")
        ipc = server.bind(f"ipc://{tmp_path}/calc")
        server.start()
        assert client_factory(tcp, timeout=10).add(1, 1) == 2
        assert client_factory(ipc, timeout=10).add(2, 2) == 4
    finally:
        server.close()


def test_reverse_direction_client_binds_server_connects(client_factory):
    client = client_factory(None, timeout=10)
    endpoint = client.bind("tcp://127.0.0.1:*")
    server = zrpc.Server(Calc())
    try:
        server.connect(endpoint)
        server.start()
        assert client.add(3, 4) == 7
    finally:
        server.close()


def test_calls_are_spread_over_several_servers(client_factory):
    servers = [zrpc.Server({"who": lambda n=n: n}) for n in range(3)]
    try:
        endpoints = [s.bind("tcp://127.0.0.1:*") for s in servers]
        for s in servers:
            s.start()
        client = client_factory(endpoints, timeout=10)
        # Wait for all three connections to be up before counting.
        assert wait_until(lambda: len({client.who() for _ in range(9)}) == 3)
        answers = [client.who() for _ in range(30)]
        assert set(answers) == {0, 1, 2}
    finally:
        for s in servers:
            s.close()


def test_close_releases_sockets_at_once_and_fails_calls_in_flight(serve, client_factory):
    endpoint = serve(Calc())
    client = zrpc.Client(endpoint, timeout=30)
    future = client.sleep.call_async(10)
    assert wait_until(lambda: serve.servers[-1].calls_in_flight == 1)
    started = time.monotonic()
    client.close()
    with pytest.raises(zrpc.ClosedError):
        future.get(timeout=5)
    assert time.monotonic() - started < 1
    with pytest.raises(zrpc.ClosedError):
        client.add(1, 2)
    # The server notices the client is gone and cancels its work.
    assert wait_until(lambda: serve.servers[-1].calls_in_flight == 0, timeout=20)


def test_server_rebind_after_close_proves_the_port_was_released(client_factory):
    server = zrpc.Server(Calc())
    endpoint = server.bind("tcp://127.0.0.1:*")
    server.start()
    assert client_factory(endpoint, timeout=10).add(1, 1) == 2
    server.close()
    again = zrpc.Server(Calc())

    def rebind():
        try:
            return again.bind(endpoint) == endpoint
        except zrpc.ZrpcError:
            raise
        except Exception:  # zmq releases the port in its I/O thread, a moment after close()
            return False

    try:
        assert wait_until(rebind, timeout=5)
        again.start()
        assert client_factory(endpoint, timeout=10).add(2, 2) == 4
    finally:
        again.close()


def test_stop_lets_calls_in_flight_finish_and_rejects_new_ones(client_factory):
    server = zrpc.Server(Calc())
    endpoint = server.bind("tcp://127.0.0.1:*")
    server.start()
    client = client_factory(endpoint, timeout=10)
    try:
        slow = client.sleep.call_async(0.5)
        assert wait_until(lambda: server.calls_in_flight == 1)
        stopper = gevent.spawn(server.stop, 5)
        assert wait_until(lambda: server.stopping)
        with pytest.raises(zrpc.RemoteError) as info:
            client.add(1, 2)
        assert info.value.name == "ServerStopping"
        assert slow.get(timeout=5) == 0.5
        stopper.get(timeout=5)
    finally:
        server.close()


def test_stop_timeout_cancels_stragglers_with_a_clear_error(client_factory):
    server = zrpc.Server(Calc())
    endpoint = server.bind("tcp://127.0.0.1:*")
    server.start()
    client = client_factory(endpoint, timeout=10)
    try:
        slow = client.sleep.call_async(30)
        assert wait_until(lambda: server.calls_in_flight == 1)
        started = time.monotonic()
        server.stop(0.2)
        with pytest.raises(zrpc.RemoteError) as info:
            slow.get(timeout=5)
        assert info.value.name == "ServerStopped"
        assert time.monotonic() - started < 3
    finally:
        server.close()


def test_run_blocks_until_stop(client_factory):
    server = zrpc.Server(Calc())
    endpoint = server.bind("tcp://127.0.0.1:*")
    runner = gevent.spawn(server.run)
    try:
        assert client_factory(endpoint, timeout=10).add(5, 5) == 10
        assert not runner.ready()
        server.stop()
        runner.get(timeout=5)
    finally:
        server.close()


def test_client_and_server_as_context_managers(tmp_path):
    with zrpc.Server(Calc()) as server:
        endpoint = server.bind(f"ipc://{tmp_path}/ctx")
        server.start()
        with zrpc.Client(endpoint, timeout=10) as client:
            assert client.add(1, 2) == 3
        assert client.closed
    assert server.closed


def test_streams_heartbeats_and_cancels_follow_each_call_to_its_server(client_factory):
    closed = []

    def make(n):
        @zrpc.stream
        def items(count):
            try:
                for _ in range(count):
                    yield n
            finally:
                closed.append(n)

        def slow(seconds):
            gevent.sleep(seconds)
            return n

        return {"items": items, "slow": slow}

    servers = [zrpc.Server(make(n), heartbeat=0.2) for n in range(3)]
    try:
        endpoints = [s.bind("tcp://127.0.0.1:*") for s in servers]
        for s in servers:
            s.start()
        client = client_factory(endpoints, timeout=10, heartbeat=0.2, stream_window=16)
        assert wait_until(lambda: len({client.slow(0) for _ in range(9)}) == 3)
        # Streams far longer than the credit window: every _zpc_more must reach the right server.
        streams = [client.items(500) for _ in range(6)]
        sources = []
        for stream in streams:
            items = list(stream)
            assert len(items) == 500 and len(set(items)) == 1
            sources.append(items[0])
        assert set(sources) == {0, 1, 2}
        # Calls lasting 5 heartbeat intervals: heartbeats must go to the server running the call.
        futures = [client.slow.call_async(1.0) for _ in range(6)]
        gevent.joinall(futures, timeout=10, raise_error=True)
        assert {f.get() for f in futures} == {0, 1, 2}
        # A cancel reaches the server producing the stream.
        closed.clear()
        early = [client.items(10_000) for _ in range(3)]
        owners = [next(s) for s in early]
        for s in early:
            s.close()
        assert wait_until(lambda: sorted(closed) == sorted(owners), timeout=5)
    finally:
        for s in servers:
            s.close()


def test_server_keeps_reading_after_replies_to_departed_callers_fail(serve):
    # A reply that cannot be routed (the caller closed) must not eat the reader's wake-up.
    endpoint = serve({"hit": lambda i: i})
    for i in range(200):
        client = zrpc.Client(endpoint, timeout=5)
        assert client.call("hit", -1) == -1
        client.call_async("hit", i)  # its reply will find the caller gone
        client.close()


def test_call_greenlets_are_reused(serve, client_factory):
    client = client_factory(serve({"me": lambda: id(gevent.getcurrent())}), timeout=10)
    assert len({client.me() for _ in range(200)}) <= 2


def test_cancels_never_reach_the_next_call_on_a_reused_greenlet(serve, client_factory):
    # Calls that finish just as their caller gives up, interleaved with calls that must succeed:
    # a cancel meant for the first kind must never land in the second on the same greenlet.
    endpoint = serve({"work": lambda s: gevent.sleep(s) or s}, pool_size=8)
    client = client_factory(endpoint, timeout=10)
    racing = client.with_options(timeout=0.05)
    futures, doomed = [], []
    for round_ in range(20):
        doomed += [racing.work.call_async(0.05) for _ in range(8)]
        futures += [client.work.call_async(0.01) for _ in range(8)]
    gevent.joinall(futures + doomed, timeout=30)
    assert [f.get(timeout=1) for f in futures] == [0.01] * len(futures)
    assert all(f.ready() for f in doomed)
    assert wait_until(lambda: serve.servers[-1].calls_in_flight == 0, timeout=5)


def test_stop_called_by_a_method_returns_and_run_ends_once_the_other_calls_are_done(client_factory):
    """zerorpc's ``def shutdown(self): server.stop()``: stop() must not wait for the call that made it."""
    slow_started = gevent.event.Event()

    class Service:
        def slow(self):
            slow_started.set()
            gevent.sleep(0.5)
            return "slow done"

        def shutdown(self):
            server.stop()
            return "bye"

    server = zrpc.Server(Service())
    endpoint = server.bind("tcp://127.0.0.1:*")
    runner = gevent.spawn(server.run)
    try:
        client = client_factory(endpoint, timeout=10)
        slow = client.slow.call_async()
        assert slow_started.wait(10)
        assert client.shutdown() == "bye"  # the stopping call's reply still reaches its caller
        assert not runner.ready()  # slow() is still running: run() waits for it
        assert slow.get(timeout=10) == "slow done"
        runner.join(timeout=10)
        assert runner.ready() and runner.successful()
    finally:
        server.close()
        runner.kill()
