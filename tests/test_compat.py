"""``import zrpc.compat as zerorpc``: typical zerorpc code, unchanged, against the real zerorpc 0.6.3.

The program in tests/peers/zerorpc_program.py is written for zerorpc. It runs
each role (server and client; puller and pusher) on either implementation, in
separate processes, and every pairing must print exactly what zerorpc with
zerorpc prints: results, errors, and which middleware hooks ran, with what.
"""
import json
import os
import sys
from typing import Dict, List

import gevent
import pytest
import zmq
from gevent import subprocess

import zrpc
import zrpc.compat as zerorpc_compat
from zrpc.core.errors import LostRemote
from conftest import PEERS, ROOT, free_tcp_endpoint, wait_until

PROGRAM = os.path.join(PEERS, "zerorpc_program.py")
IMPLEMENTATIONS = ("zerorpc", "compat")


def _start(impl: str, role: str, endpoint: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, PROGRAM, role, endpoint], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, "ZERORPC_IMPL": impl, **env})


def _ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"peer did not start: {line!r}{out}\n{err[-3000:]}")


def _steps(output: str) -> List[list]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("[")]


def _pair(server_role: str, other_role: str, server_impl: str, other_impl: str) -> List[list]:
    """Run the binding role and then the connecting role; the output of the one that prints the steps."""
    endpoint = free_tcp_endpoint()
    server = _start(server_impl, server_role, endpoint)
    try:
        _ready(server)
        other = _start(other_impl, other_role, endpoint)
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, f"{other_role} on {other_impl} failed:\n{out}\n{err[-3000:]}"
        if server_role == "server":
            return _steps(out)
        out, err = server.communicate(timeout=30)
        assert server.returncode == 0, f"{server_role} on {server_impl} failed:\n{out}\n{err[-3000:]}"
        return _steps(out)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)


_reference: Dict[str, List[list]] = {}


def _zerorpc_reference(server_role: str, other_role: str) -> List[list]:
    if server_role not in _reference:
        _reference[server_role] = _pair(server_role, other_role, "zerorpc", "zerorpc")
    return _reference[server_role]


@pytest.mark.parametrize("server_impl,client_impl", [("compat", "compat"), ("compat", "zerorpc"),
                                                     ("zerorpc", "compat")])
def test_zerorpc_program_runs_unchanged_with_the_same_results_and_hooks(server_impl: str, client_impl: str) -> None:
    expected = _zerorpc_reference("server", "client")
    assert [step[0] for step in expected] == [
        "add", "call", "async", "stream", "remote error", "mapped error", "server journal", "client journal",
        "timeout", "after timeout", "normalised by server_before_exec", "zrpc.Client names", "exceptions module",
        "stream items further apart than the timeout", "task context values", "async, blocking hook",
        "async, raising hook", "rich journal"]
    assert _pair("server", "client", server_impl, client_impl) == expected


@pytest.mark.parametrize("puller_impl,pusher_impl", [("compat", "compat"), ("compat", "zerorpc"),
                                                     ("zerorpc", "compat")])
def test_zerorpc_events_with_task_context_run_unchanged(puller_impl: str, pusher_impl: str) -> None:
    expected = _zerorpc_reference("puller", "pusher")
    assert expected[-3][0] == "journal" and len(expected[-3][1]) == 9  # 3 events x 3 hooks
    # puller("resize", ...) runs the method here, with no hooks
    assert expected[-2:] == [["event", "resize", "d.png", 40], ["direct call", None]]
    assert _pair("puller", "pusher", puller_impl, pusher_impl) == expected


# -- in one process: what the program above cannot show --------------------------------------
class _Service:
    def add(self, a, b):
        return a + b

    def kw(self, a, b=0):
        return [a, b]

    @zrpc.stream
    def count(self, n):
        return iter(range(n))

    def closed(self):
        return "the remote closed()"


@pytest.fixture
def compat_server():
    context = zerorpc_compat.Context()
    server = zerorpc_compat.Server(_Service(), context=context, heartbeat=1)
    endpoint = server.bind("tcp://127.0.0.1:*")
    server.start()
    yield endpoint, context
    server.close()
    context.term()


def test_call_options_async_underscore_timeout_and_keyword_arguments(compat_server) -> None:
    endpoint, context = compat_server
    with zerorpc_compat.Client(endpoint, context=context, heartbeat=1, passive_heartbeat=True) as client:
        future = client.add(1, 2, async_=True)
        assert isinstance(future, gevent.event.AsyncResult) and future.get(timeout=10) == 3
        assert client.add(2, 2, timeout=5) == 4
        assert client("kw", 1, b=2) == [1, 2]  # keyword arguments reach a zrpc server
        assert client.kw(1, b=3, slots=10) == [1, 3]
        assert list(client.count(4)) == [0, 1, 2, 3]
        assert client.add.call_async(5, 5).get(timeout=10) == 10


def test_middleware_registered_later_applies_and_dict_middleware_counts(compat_server) -> None:
    endpoint, context = compat_server
    seen: List[str] = []
    with zerorpc_compat.Client(endpoint, context=context, heartbeat=1) as client:
        assert client.add(1, 1) == 2
        assert context.register_middleware({"client_before_request": lambda event: seen.append(event.name),
                                            "not_a_hook": print}) == 1
        assert client.add(1, 2) == 3
    assert seen == ["add"]


def test_a_real_zerorpc_context_as_context_closes_cleanly(compat_server) -> None:
    import zerorpc  # the real package, for its Context only (no zerorpc socket in this process)

    endpoint, _ = compat_server
    context = zerorpc.Context()
    client = zerorpc_compat.Client(endpoint, context=context, heartbeat=1)
    assert client.add(20, 22) == 42
    client.close()  # zerorpc's own close(linger=...) trap does not apply here
    context.term()


def test_async_future_gets_the_mapped_remote_error(compat_server) -> None:
    endpoint, context = compat_server

    class Mapper:
        def client_handle_remote_error(self, event):
            return KeyError(event.args[0]) if event.args[0] == "NameError" else None

    context.register_middleware(Mapper())
    with zerorpc_compat.Client(endpoint, context=context, heartbeat=1) as client:
        future = client.missing(async_=True)
        with pytest.raises(KeyError):
            future.get(timeout=10)
        with pytest.raises(KeyError):
            client.missing()


def test_an_event_that_raises_reaches_server_inspect_exception_with_no_reply_event() -> None:
    context = zerorpc_compat.Context()
    seen: List[list] = []
    context.register_middleware({
        "server_inspect_exception": lambda req, rep, task, exc_infos: seen.append(
            [req.name, rep, exc_infos[0].__name__, task]),
        "get_task_context": lambda: {"task_id": "t-1"},
        "load_task_context": lambda header: seen.append(["load", header.get("task_id")]),
    })
    done = gevent.event.Event()

    class Handlers:
        def boom(self, n):
            raise ValueError(n)

        def fine(self):
            done.set()

    puller = zerorpc_compat.Puller(Handlers(), context=context)
    pusher = zerorpc_compat.Pusher(context=context)
    try:
        endpoint = puller.bind("tcp://127.0.0.1:*")
        puller.start()
        pusher.connect(endpoint)
        pusher.boom(1)
        pusher.fine()  # the puller goes on after a handler raised
        assert done.wait(10)
        assert wait_until(lambda: len(seen) >= 3, timeout=10)
        assert seen[:2] == [["load", "t-1"], ["boom", None, "ValueError", {"task_id": "t-1"}]]
    finally:
        pusher.close()
        puller.close()
        context.term()


# -- the review's findings: what the program above does not show ------------------------------
@pytest.mark.parametrize("server_impl", IMPLEMENTATIONS)
def test_a_stream_without_a_timeout_between_items_still_fails_when_its_server_dies(server_impl: str) -> None:
    # Items may come further apart than the timeout (as in zerorpc), but a dead server is still noticed.
    endpoint = free_tcp_endpoint()
    server = _start(server_impl, "server", endpoint, ZERORPC_HEARTBEAT="0.5")
    try:
        _ready(server)
        with zerorpc_compat.Client(endpoint, timeout=0.5, heartbeat=0.5, context=zerorpc_compat.Context()) as client:
            items = client.pause_stream(60)
            assert next(items) == "first"
            killer = gevent.spawn_later(1.5, server.kill)  # after three timeouts: the stream still waits
            with gevent.Timeout(15):
                with pytest.raises(LostRemote):
                    next(items)
            assert killer.dead and killer.successful()
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=10)


def test_client_hooks_see_the_wire_message_id_and_reply_headers_with_response_to() -> None:
    server_context, client_context = zerorpc_compat.Context(), zerorpc_compat.Context()
    received: List[bytes] = []
    seen: List[object] = []
    server_context.register_middleware({"load_task_context": lambda header: received.append(header["message_id"])})
    client_context.register_middleware({
        "client_before_request": lambda event: seen.append(dict(event.header)),
        "client_after_request": lambda req, rep, exc: seen.append(rep.header)})
    server = zerorpc_compat.Server(_Service(), context=server_context, heartbeat=1)
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        with zerorpc_compat.Client(endpoint, context=client_context, heartbeat=1) as client:
            assert client.add(1, 2) == 3
            assert client.add(2, 2, async_=True).get(timeout=10) == 4
    finally:
        server.close()
        server_context.term()
        client_context.term()
    assert len(received) == 2 and received[0] != received[1]
    assert seen == [{"message_id": received[0], "v": 3}, {"v": 3, "response_to": received[0]},
                    {"message_id": received[1], "v": 3}, {"v": 3, "response_to": received[1]}]


@pytest.mark.parametrize("task_context,error", [
    ({"zrpc_deadline": 1}, ValueError),  # zrpc's own keys stay zrpc's
    ({"blob": object()}, TypeError),  # msgpack cannot encode it
    ({"blob": "x" * 9000}, ValueError),  # over the 8 KiB of headers
])
def test_task_context_that_cannot_be_sent_is_refused_before_sending(compat_server, task_context, error) -> None:
    endpoint, context = compat_server
    calls: List[str] = []
    context.register_middleware({"load_task_context": lambda header: calls.append("served")})
    client_context = zerorpc_compat.Context()
    client_context.register_middleware({"get_task_context": lambda: task_context})
    try:
        with zerorpc_compat.Client(endpoint, context=client_context, heartbeat=1) as client:
            with pytest.raises(error):
                client.add(1, 2)
            with pytest.raises(error):
                client.add(1, 2, async_=True)
            assert calls == []  # nothing reached the server
    finally:
        client_context.term()


def test_zrpc_client_features_stay_reachable_through_the_class(compat_server) -> None:
    endpoint, context = compat_server
    with zerorpc_compat.Client(endpoint, context=context, heartbeat=1) as client:
        assert isinstance(client.with_options, zrpc.core.calling.RemoteMethod)  # a remote method here
        assert zrpc.Client.timeout.__get__(client) == 30
        native = zrpc.Client.with_options(client, timeout=5)  # zrpc's calling API, on this client
        assert native.add(1, 2) == 3
        assert native.call_async("add", 2, 3).get(timeout=10) == 5
        batch = native.batch()
        batch.add(1, 1)
        assert batch.run() == [2]
        assert client.closed is False and client("closed") == "the remote closed()"  # zrpc keeps `closed`


def test_every_node_runs_resolve_endpoint() -> None:
    context = zerorpc_compat.Context()
    context.register_middleware({"resolve_endpoint": lambda endpoint: endpoint.replace("tcp://svc:", "tcp://127.0.0.1:")})
    nodes = [zerorpc_compat.Publisher(context=context), zerorpc_compat.Subscriber({}, context=context),
             zerorpc_compat.Pusher(context=context), zerorpc_compat.Puller({}, context=context)]
    try:
        for node in nodes:
            assert node.bind("tcp://svc:*").startswith("tcp://127.0.0.1:")
            with pytest.raises(zmq.ZMQError):
                node.bind("tcp://svc:*", resolve=False)
    finally:
        for node in nodes:
            node.close()
        context.term()


def test_server_before_exec_may_replace_the_arguments(compat_server) -> None:
    endpoint, context = compat_server

    def before(event):
        event.args = [event.args[0] * 10, event.args[1]]

    context.register_middleware({"server_before_exec": before})
    with zerorpc_compat.Client(endpoint, context=zerorpc_compat.Context(), heartbeat=1) as client:
        assert client.add(1, 2) == 12


def test_exceptions_module_imports_and_direct_call_of_a_missing_event_method() -> None:
    from zrpc.compat.exceptions import LostRemote as Lost, RemoteError as Remote, TimeoutExpired as Expired

    assert (Remote, Expired, Lost) == (zerorpc_compat.RemoteError, zerorpc_compat.TimeoutExpired, LostRemote)
    puller = zerorpc_compat.Puller({"known": lambda: "ran"})
    try:
        assert puller("known") == "ran"
        with pytest.raises(NameError):
            puller("unknown")
    finally:
        puller.close()
