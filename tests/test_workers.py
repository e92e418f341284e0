"""``zrpc serve --workers N`` and ``zrpc status``, over real processes.

Every server here is a real ``zrpc serve --workers`` process tree (the
supervisor routing, workers serving tests/peers/workers_service.py), called
by zrpc clients in this process and by zerorpc 0.6.3 and zerorpc-node
clients in processes of their own. Which worker ran a call is told by the
call itself (methods return their pid) and by the router (``_zrpc_status``).
"""
import json
import os
import signal
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import gevent
import gevent.event
import gevent.subprocess
import pytest
import zmq

import zrpc

from conftest import PEERS, ROOT, free_tcp_endpoint, refused_within, wait_until

HB = 1.0  # the heartbeat of every server and client here


class WorkersServer:
    """A ``zrpc serve --workers N`` process tree on a free tcp port, ended (bounded) by close()."""

    def __init__(self, n: int = 2, *options: str, heartbeat: float = HB, endpoint: Optional[str] = None) -> None:
        self.endpoint = endpoint or free_tcp_endpoint()
        self.proc = gevent.subprocess.Popen(
            [sys.executable, "-m", "zrpc", "serve", "--workers", str(n), "--bind", self.endpoint,
             "--heartbeat", str(heartbeat), *options, "workers_service:Service"],
            cwd=PEERS, env={**os.environ, "PYTHONPATH": ROOT},
            stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)
        self.client = zrpc.Client(self.endpoint, heartbeat=heartbeat, timeout=10)
        self.n = n

    def status(self) -> Dict[str, Any]:
        return self.client.call("_zrpc_status")

    def wait_ready(self, timeout: float = 30.0) -> Dict[str, Any]:
        """Block (bounded) until every worker is connected; return the status then."""
        seen: List[Dict[str, Any]] = []

        def ready() -> bool:
            assert self.proc.poll() is None, f"the server exited: {self.proc.communicate()}"
            try:
                seen.append(self.client.with_options(timeout=2).call("_zrpc_status"))
            except zrpc.TimeoutExpired:
                return False
            return all(w["ready"] and w["pid"] for w in seen[-1]["workers"])

        assert wait_until(ready, timeout, step=0.05), f"workers not ready after {timeout}s: {seen[-1:]}"
        return seen[-1]

    def pids(self) -> List[int]:
        return [w["pid"] for w in self.status()["workers"]]

    def finish(self, timeout: float = 30.0) -> tuple:
        """Wait (bounded) for the supervisor to exit; return (returncode, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except gevent.subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            pytest.fail(f"zrpc serve --workers still running after {timeout}s:\n{err[-3000:]}")
        return self.proc.returncode, out, err

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGTERM)  # the second one cancels what is left
            self.finish()


@pytest.fixture
def workers_server() -> Iterator[Any]:
    """workers_server(n=2, *options) -> a ready WorkersServer, closed after the test."""
    servers: List[WorkersServer] = []

    def start(n: int = 2, *options: str, **kwargs: Any) -> WorkersServer:
        server = WorkersServer(n, *options, **kwargs)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[WorkersServer]:
    """One --workers 2 server for the tests that neither kill nor stop it."""
    server = WorkersServer(2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def by_worker(status: Dict[str, Any], key: str) -> List[int]:
    return [w[key] for w in status["workers"]]


# -- spreading and routing -------------------------------------------------------------
def test_concurrent_calls_go_to_the_worker_with_fewest_in_flight(shared):
    pids = set(shared.pids())
    assert len(pids) == 2 and os.getpid() not in pids
    before = by_worker(shared.status(), "served")
    futures = [shared.client.call_async("slow", 1.0) for _ in range(8)]
    # Least in flight: 8 calls at once are 4 and 4, and the router says so while they run.
    assert wait_until(lambda: by_worker(shared.status(), "in_flight") == [4, 4], 5)
    ran = [f.get(timeout=10) for f in futures]
    assert sorted(ran.count(pid) for pid in pids) == [4, 4]
    after = shared.status()
    assert [a - b for a, b in zip(by_worker(after, "served"), before)] == [4, 4]
    assert after["in_flight"] == 0 and not after["stopping"]


def test_sequential_calls_alternate_between_idle_workers(shared):
    ran = [shared.client.pid() for _ in range(10)]
    assert sorted(ran.count(pid) for pid in set(ran)) == [5, 5]


def test_streams_of_1000_items_and_long_calls_through_two_workers(shared):
    window = zrpc.Client(shared.endpoint, heartbeat=HB, timeout=10, stream_window=8)  # much credit traffic
    try:
        streams = [gevent.spawn(lambda: list(window.count(1000))) for _ in range(3)]
        long_calls = [shared.client.call_async("slow", 2.5 * HB) for _ in range(2)]  # > two heartbeats
        assert wait_until(lambda: by_worker(shared.status(), "in_flight") != [0, 0], 5)
        gevent.joinall(streams, timeout=30, raise_error=True)
        assert [s.value for s in streams] == [list(range(1000))] * 3
        # Both long calls end well, wherever the streams' load sent them.
        assert set(f.get(timeout=15) for f in long_calls) <= set(shared.pids())
    finally:
        window.close()


def test_a_zerorpc_client_streams_and_calls_long_through_workers(shared):
    from test_interop_zerorpc import finish_zerorpc_client, start_zerorpc_client

    assert HB == 1.0  # the zerorpc client scenarios run with the same heartbeat
    procs = [start_zerorpc_client(shared.endpoint, "stream", 1000, 100, 500),
             start_zerorpc_client(shared.endpoint, "slow", 2.5, 4),
             start_zerorpc_client(shared.endpoint, "basic")]
    stream, slow, basic = [finish_zerorpc_client(p) for p in procs]
    assert stream["stream"]["value"] == list(range(1000))
    assert stream["empty_stream"]["value"] == [] and stream["after_stream"]["value"] == 4
    pids = shared.pids()
    assert sorted(slow[f"slow{i or ''}"]["value"] for i in range(4)) == sorted(pids * 2)
    assert basic["add"]["value"] == 30 and basic["echo_big"]["value"] is True


def test_a_zerorpc_node_client_through_workers(shared, node_peers):
    calls = [{"check": "count", "method": "count", "args": [1000]},
             {"check": "slow0", "method": "slow", "args": [2.5]},
             {"check": "slow1", "method": "slow", "args": [2.5]}]
    run = gevent.subprocess.run(
        ["node", os.path.join(node_peers, "zerorpc_client.js"), shared.endpoint, json.dumps(calls),
         "--heartbeat", str(int(HB * 1000)), "--timeout", "20"],
        cwd=node_peers, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    checks = {r["check"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert checks["count"]["value"] == list(range(1000)), checks["count"]
    assert sorted([checks["slow0"]["value"], checks["slow1"]["value"]]) == sorted(shared.pids())


def test_current_call_in_a_worker_sees_the_client_not_the_router(shared):
    info = shared.client.caller()
    assert info["method"] == "caller" and info["pid"] in shared.pids()
    # The router passes on the client's address as it read it off the connection.
    assert info["peer_address"] == "127.0.0.1"
    assert info["user_id"] is None  # no CURVE here


def test_a_client_cannot_forge_the_caller_the_router_names(shared):
    # A raw DEALER puts a caller frame of its own, claiming another address and a key, in front
    # of its request: the router's frame comes first, so the worker still sees the real caller.
    from zrpc.core import protocol
    from zrpc.core.routing import caller_frame

    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(shared.endpoint)
        forged = caller_frame("10.6.6.6", "forged-key")
        request = protocol.encode(protocol.new_header(b"forged-1"), "caller", [])
        sock.send_multipart([forged, b"", request])
        assert sock.poll(10_000), "no answer from the router"
        frames = sock.recv_multipart()
        assert frames[0] == forged  # the client's own envelope comes back to it as it was
        header, name, args = protocol.decode(frames[-1])
        assert name == "OK", args
        assert args[0]["peer_address"] == "127.0.0.1" and args[0]["user_id"] is None
    finally:
        sock.close()
        context.term()


def test_a_client_reusing_a_chosen_routing_id_is_seen_as_itself(tmp_path):
    # A routing id a client chooses (ZMQ_ROUTING_ID) can come back on another connection once the
    # first one is gone: the router must not hand the newcomer its predecessor's identity.
    public_file, secret_file = zrpc.security.write_certificates(str(tmp_path / "server"))
    server = WorkersServer(2, "--curve-secret", secret_file)
    try:
        seen = []
        for _ in range(2):  # alice, then bob, on the same routing id
            public, secret = zrpc.curve_keypair()
            client = zrpc.Client(server.endpoint, heartbeat=HB, timeout=10, curve_server_key=public_file,
                                 curve_secret_key=secret, socket_options={zmq.ROUTING_ID: b"chosen-id"})
            try:
                assert wait_until(lambda: _answers(client), 30, step=0.1)
                seen.append((public.decode(), client.caller()["user_id"]))
            finally:
                client.close()
        (alice, seen_alice), (bob, seen_bob) = seen
        assert seen_alice == alice and seen_bob == bob != alice
    finally:
        server.client.close()
        server.proc.send_signal(signal.SIGTERM)
        server.finish()


def test_cancelled_calls_leave_the_router_at_once_even_without_heartbeats(workers_server):
    server = workers_server(2, heartbeat=0)
    client = zrpc.Client(server.endpoint, heartbeat=None, timeout=10)
    try:
        for _ in range(6):  # each timeout sends zrpc's cancel, which the worker answers with nothing
            with pytest.raises(zrpc.TimeoutExpired):
                client.with_options(timeout=0.1).slow(60)
        assert wait_until(lambda: server.status()["in_flight"] == 0, 5), server.status()
        assert not any(w["silent"] for w in server.status()["workers"])
    finally:
        client.close()


def test_a_long_tmpdir_does_not_stop_the_workers(tmp_path):
    # ipc paths are limited to 107 bytes: the private directory must not inherit a long $TMPDIR.
    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    endpoint = free_tcp_endpoint()
    proc = gevent.subprocess.Popen(
        [sys.executable, "-m", "zrpc", "serve", "--workers", "2", "--bind", endpoint, "--heartbeat", str(HB),
         "workers_service:Service"], cwd=PEERS, env={**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(long_tmp)},
        stdout=gevent.subprocess.DEVNULL, stderr=gevent.subprocess.PIPE, text=True)
    client = zrpc.Client(endpoint, heartbeat=HB, timeout=10)
    try:
        assert wait_until(lambda: _answers(client) and all(w["ready"] for w in client.call("_zrpc_status")["workers"]),
                          30, step=0.1)
        assert len({client.pid() for _ in range(4)}) == 2
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


def test_a_worker_whose_start_fails_slowly_is_restarted_with_a_growing_delay(tmp_path):
    mark = tmp_path / "fail"
    endpoint = free_tcp_endpoint()
    proc = gevent.subprocess.Popen(
        [sys.executable, "-m", "zrpc", "serve", "--workers", "2", "--bind", endpoint, "--heartbeat", str(HB),
         "slow_failing_service:Service"], cwd=PEERS,
        env={**os.environ, "PYTHONPATH": ROOT, "ZRPC_TEST_FAIL_MARK": str(mark)},
        stdout=gevent.subprocess.DEVNULL, stderr=gevent.subprocess.PIPE, text=True)
    client = zrpc.Client(endpoint, heartbeat=HB, timeout=10)
    try:
        assert wait_until(lambda: _answers_status(client), 30, step=0.1)
        mark.write_text("")  # from now on every new worker fails, 1.2 s into its start
        os.kill(client.call("_zrpc_status")["workers"][0]["pid"], signal.SIGKILL)
        # it never serves again: each failure is a quick death, however long the start took
        assert wait_until(lambda: client.call("_zrpc_status")["workers"][0]["restarts"] >= 3, 20, step=0.1)
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    delays = [line.rsplit(" in ", 1)[1] for line in err.splitlines() if "restarting it in " in line]
    assert delays[:2] == ["0.1s", "0.2s"], err[-3000:]


def _answers_status(client: Any) -> bool:
    try:
        return all(w["ready"] for w in client.with_options(timeout=2).call("_zrpc_status")["workers"])
    except zrpc.TimeoutExpired:
        return False


def test_behind_router_is_refused_on_an_endpoint_clients_reach():
    run = gevent.subprocess.run([sys.executable, "-m", "zrpc", "serve", "--behind-router",
                          "--bind", "tcp://127.0.0.1:1", "time"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--behind-router is for the workers" in run.stderr, run.stderr


# -- a worker that dies ------------------------------------------------------------------
def test_kill_9_a_worker_mid_load(workers_server):
    server = workers_server(2)
    victim, survivor = server.pids()
    futures = [server.client.call_async("slow", 4 * HB) for _ in range(8)]
    assert wait_until(lambda: by_worker(server.status(), "in_flight") == [4, 4], 5)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    # Once the router has seen it go (its connection drops at once), new calls go to the survivor.
    assert wait_until(lambda: not server.status()["workers"][0]["ready"], 5)
    during = [server.client.pid() for _ in range(5)]
    results: List[Any] = []

    def wait(future: Any) -> None:
        try:
            results.append(future.get(timeout=10))
        except zrpc.LostRemote as exc:
            results.append((exc, time.monotonic() - killed_at))

    gevent.joinall([gevent.spawn(wait, f) for f in futures], timeout=15)
    lost = [r for r in results if isinstance(r, tuple)]
    assert len(lost) == 4, results
    # At once (the router answers them when it reaps the worker), not after the heartbeats.
    assert max(after for _, after in lost) < 2 * HB, lost
    assert all("was killed by SIGKILL" in str(exc) for exc, _ in lost), lost
    assert [r for r in results if not isinstance(r, tuple)] == [survivor] * 4
    assert during == [survivor] * 5
    # The worker comes back, and serves.
    status = server.wait_ready()
    assert by_worker(status, "restarts") == [1, 0]
    assert status["workers"][0]["pid"] not in (victim, survivor)
    assert status["in_flight"] == 0
    assert set(server.client.pid() for _ in range(4)) == {status["workers"][0]["pid"], survivor}


def test_a_frozen_worker_costs_only_the_calls_it_held(workers_server):
    server = workers_server(2)
    frozen, other = server.pids()
    failures: List[Any] = []
    served: Dict[int, int] = {}
    stop = gevent.event.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                pid = server.client.slow(0.02)  # returns the pid of the worker that ran it
            except zrpc.LostRemote as exc:
                failures.append((time.monotonic(), exc))
            else:
                served[pid] = served.get(pid, 0) + 1

    callers = [gevent.spawn(caller) for _ in range(8)]
    try:
        assert wait_until(lambda: len(served) == 2, 10)
        os.kill(frozen, signal.SIGSTOP)
        frozen_at = time.monotonic()
        # The router notices within two intervals and sends it nothing more; the calls it held fail
        # by the callers' heartbeats. Then, for six more intervals, nothing else fails.
        assert wait_until(lambda: server.status()["workers"][0]["silent"], 5 * HB, step=0.05)
        gevent.sleep(8 * HB)  # the window in which a trickle of calls to the frozen worker would fail
        held = len(failures)
        assert 1 <= held <= 8, failures  # at most the calls in flight there when it froze
        assert all(at - frozen_at < 4 * HB for at, _ in failures), [at - frozen_at for at, _ in failures]
        before = served.get(frozen, 0)
        os.kill(frozen, signal.SIGCONT)  # it answers the router's ping, and takes calls again
        assert wait_until(lambda: served.get(frozen, 0) > before + 10, 10), served
        assert not server.status()["workers"][0]["silent"]
    finally:
        os.kill(frozen, signal.SIGCONT)
        stop.set()
        gevent.joinall(callers, timeout=15)
    assert len(failures) == held and served[other] > 100


def test_a_stream_continues_while_another_worker_is_killed_and_restarted(workers_server):
    server = workers_server(2)
    stream = server.client.tagged(300, 0.01)
    first = next(stream)
    streaming_pid = first[1]
    other = next(pid for pid in server.pids() if pid != streaming_pid)
    os.kill(other, signal.SIGKILL)
    assert wait_until(lambda: 1 in by_worker(server.status(), "restarts"), 10)
    server.wait_ready()
    rest = list(stream)
    assert [first] + rest == [[i, streaming_pid] for i in range(300)]
    assert streaming_pid in server.pids()


# -- stopping ------------------------------------------------------------------------------
def test_sigterm_drains_every_worker(workers_server):
    server = workers_server(2, "--grace", "10")
    futures = [server.client.call_async("slow", 1.5) for _ in range(4)]
    assert wait_until(lambda: by_worker(server.status(), "in_flight") == [2, 2], 5)
    pids = server.pids()
    server.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: server.status()["stopping"], 5)
    with pytest.raises(zrpc.RemoteError) as refused:
        server.client.add(1, 2)
    assert refused.value.name == "ServerStopping"
    assert sorted(f.get(timeout=10) for f in futures) == sorted(pids * 2)  # all four finished
    code, _, err = server.finish(20)
    assert code == 0, err
    assert "stopping 2 workers" in err and err.rstrip().endswith("zrpc: stopped")
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def test_sigterm_cancels_calls_longer_than_grace(workers_server):
    server = workers_server(2, "--grace", "0.5")
    futures = [server.client.call_async("slow", 30) for _ in range(2)]
    assert wait_until(lambda: server.status()["in_flight"] == 2, 5)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for future in futures:
        with pytest.raises(zrpc.RemoteError) as stopped:
            future.get(timeout=10)
        assert stopped.value.name == "ServerStopped"
    code, _, err = server.finish(20)
    assert code == 0, err
    assert time.monotonic() - started < 8


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- zrpc status and the CLI ------------------------------------------------------------------
def test_zrpc_status_shows_every_worker(shared):
    shared.client.pid()
    status = shared.status()
    run = gevent.subprocess.run([sys.executable, "-m", "zrpc", "status", shared.endpoint],
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"{shared.endpoint}: workers_service:Service, 2 workers")
    assert "serving" in lines[0] and "calls in flight" in lines[0]
    assert lines[1].split() == ["worker", "pid", "ready", "in", "flight", "served", "restarts"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], int(r[1]), r[2]) for r in rows] == [(str(i), pid, "yes") for i, pid in
                                                       enumerate(by_worker(status, "pid"))]
    as_json = gevent.subprocess.run([sys.executable, "-m", "zrpc", "status", "--json", shared.endpoint],
                                    capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert as_json.returncode == 0, as_json.stderr
    parsed = json.loads(as_json.stdout)
    assert by_worker(parsed, "pid") == by_worker(status, "pid") and parsed["target"] == "workers_service:Service"


def test_zrpc_status_of_a_single_server(serve):
    endpoint = serve({"add": lambda a, b: a + b})
    run = gevent.subprocess.run([sys.executable, "-m", "zrpc", "status", endpoint],
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{endpoint}: a single server process (not started with --workers)"


def test_a_target_that_does_not_import_fails_fast():
    run = gevent.subprocess.run([sys.executable, "-m", "zrpc", "serve", "--workers", "2", "--bind",
                                 free_tcp_endpoint(), "no_such_module_here"],
                                capture_output=True, text=True, timeout=60, cwd=PEERS,
                                env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 2
    assert "cannot import 'no_such_module_here'" in run.stderr
    assert run.stderr.count("cannot import") == 1  # only the first worker tried
    assert "worker 0 exited with status 2 before serving no_such_module_here" in run.stderr


def test_workers_option_is_checked():
    for bad, message in (("0", "must be at least 1"), ("two", "is not a whole number")):
        run = gevent.subprocess.run([sys.executable, "-m", "zrpc", "serve", "--workers", bad, "--bind",
                                     "tcp://127.0.0.1:1", "time"], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and message in run.stderr, run.stderr


def test_metrics_port_with_workers_serves_every_worker_on_one_port(workers_server):
    from test_observability import scrape

    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    server = workers_server(2, "--metrics-port", str(port))
    client = server.client
    for i in range(20):  # sequential calls alternate between the idle workers
        assert client.add(i, 1) == i + 1
    with pytest.raises(zrpc.RemoteError):
        client.add(1)  # a TypeError in the worker: outcome "error"
    ok = ("zrpc_server_calls_total", (("method", "add"), ("outcome", "ok")))
    error = ("zrpc_server_calls_total", (("method", "add"), ("outcome", "error")))
    seen: List[Dict[Any, float]] = []

    def counted() -> bool:  # each worker writes its counts every half second
        try:
            seen.append(scrape(port))
        except OSError:  # not listening yet
            return False
        return seen[-1].get(ok) == 20 and seen[-1].get(error) == 1

    assert wait_until(counted, 15, step=0.1), seen[-1:]
    samples = seen[-1]
    assert samples[("zrpc_workers_ready", ())] == 2
    served = [samples[("zrpc_worker_calls_served_total", (("worker", str(i)),))] for i in range(2)]
    assert sum(served) == 21 and min(served) >= 5, served  # both workers served, the router counted them
    assert samples[("zrpc_server_call_duration_seconds_count", (("method", "add"),))] == 21
    # A worker killed: the calls it counted stay counted (counters never go back), and the restart shows.
    os.kill(server.pids()[0], signal.SIGKILL)
    assert wait_until(lambda: by_worker(server.status(), "restarts") == [1, 0], 15, step=0.05)
    server.wait_ready()
    assert client.add(100, 1) == 101

    def recounted() -> bool:
        seen.append(scrape(port))
        return seen[-1].get(ok) == 21

    assert wait_until(recounted, 15, step=0.1), seen[-1:]
    assert seen[-1][("zrpc_worker_restarts_total", ())] == 1
    assert seen[-1][error] == 1


def test_curve_applies_at_the_router(tmp_path):
    public_file, secret_file = zrpc.security.write_certificates(str(tmp_path / "server"))
    server = WorkersServer(2, "--curve-secret", secret_file)
    public = public_file
    try:
        client_public, client_secret = zrpc.curve_keypair()
        secure = zrpc.Client(server.endpoint, heartbeat=HB, timeout=10, curve_server_key=public,
                             curve_secret_key=client_secret)
        try:
            assert wait_until(lambda: _answers(secure), 30, step=0.1)
            # the key is checked at the router, and the worker sees it as a lone server would
            assert secure.caller()["user_id"] == client_public.decode()
        finally:
            secure.close()
        plain = zrpc.Client(server.endpoint, heartbeat=HB, timeout=2)
        try:
            with pytest.raises((zrpc.TimeoutExpired, zrpc.AuthenticationFailed, zrpc.LostRemote)):
                plain.add(1, 2)
        finally:
            plain.close()
    finally:
        server.client.close()
        server.proc.send_signal(signal.SIGTERM)
        server.finish()


def test_a_key_revoked_while_serving_is_refused_at_the_router(tmp_path):
    keydir = tmp_path / "clients"
    keydir.mkdir()
    public_file, secret_file = zrpc.security.write_certificates(str(tmp_path / "server"))
    alice_public, alice_secret = zrpc.security.write_certificates(str(tmp_path / "alice"))
    os.link(alice_public, keydir / "alice.key")
    server = WorkersServer(2, "--curve-secret", secret_file, "--curve-clients", str(keydir))
    alice = zrpc.Client(server.endpoint, heartbeat=HB, timeout=10, curve_server_key=public_file,
                        curve_secret_key=alice_secret)
    try:
        assert wait_until(lambda: _answers(alice), 30, step=0.1)
        os.unlink(keydir / "alice.key")  # revoked without a restart
        # her open connection is refused call by call (the directory is rechecked within 1 s)
        refusal = refused_within(lambda: alice.add(1, 1), zrpc.AuthenticationFailed)
        assert "no longer admitted" in str(refusal)
    finally:
        alice.close()
        server.client.close()
        server.proc.send_signal(signal.SIGTERM)
        server.finish()


def _answers(client: Any) -> bool:
    try:
        return client.with_options(timeout=2).add(1, 2) == 3
    except zrpc.TimeoutExpired:
        return False


# -- the Python API, and clients that vanish ------------------------------------------------------
@pytest.mark.parametrize("stop", ["0.5", "0"], ids=["stop-0.5", "stop-now"])
def test_workers_from_python_and_a_stop_shorter_than_grace(stop):
    # stop(0) sends the drain and the cancel at once: the worker must see both (two SIGTERMs would
    # merge into one, and the call would drain its whole grace, then be killed: LostRemote).
    endpoint = free_tcp_endpoint()
    proc = gevent.subprocess.Popen([sys.executable, os.path.join(PEERS, "workers_api.py"), endpoint, str(HB),
                                    "60", stop], cwd=PEERS, env={**os.environ, "PYTHONPATH": ROOT},
                                   stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.PIPE, text=True)
    client = zrpc.Client(endpoint, heartbeat=HB, timeout=10)
    try:
        assert proc.stdout.readline().strip() == "READY"
        assert wait_until(lambda: _answers(client) and all(w["ready"] for w in client.call("_zrpc_status")["workers"]),
                          30, step=0.1)
        assert len({client.pid() for _ in range(4)}) == 2
        long_call = client.call_async("slow", 30)
        assert wait_until(lambda: client.call("_zrpc_status")["in_flight"] == 1, 5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # stop(0.5): much shorter than the workers' grace of 60 s
        with pytest.raises(zrpc.RemoteError) as stopped:
            long_call.get(timeout=15)
        assert stopped.value.name == "ServerStopped"
        assert time.monotonic() - started < 5
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert out.strip() == "STOPPED"
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_a_caller_that_vanishes_leaks_nothing_in_the_router(shared):
    caller = gevent.subprocess.Popen([sys.executable, os.path.join(PEERS, "zrpc_caller.py"), shared.endpoint,
                                      str(HB), "slow", "60"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                                     stdout=gevent.subprocess.PIPE, text=True)
    try:
        assert caller.stdout.readline().strip() == "READY"
        assert wait_until(lambda: shared.status()["in_flight"] == 1, 10)
        caller.kill()
        caller.communicate(timeout=10)
        killed_at = time.monotonic()
        # Its worker cancels the call after two silent heartbeats; the router forgets it after three.
        assert wait_until(lambda: shared.status()["in_flight"] == 0, 3 * HB + 3)
        assert time.monotonic() - killed_at > 2 * HB
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.communicate(timeout=10)


def test_workers_serve_on_ipc_and_remove_its_file(tmp_path):
    path = tmp_path / "sock"
    server = WorkersServer(2, endpoint=f"ipc://{path}")
    try:
        server.wait_ready()
        assert path.exists()
        assert server.client.add(1, 2) == 3 and len({server.client.pid() for _ in range(4)}) == 2
    finally:
        server.close()
    assert server.proc.returncode == 0 and not path.exists()
