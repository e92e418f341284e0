"""Shared fixtures: real servers on real sockets (tcp on 127.0.0.1 and ipc), real peers in subprocesses."""
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, List

import gevent
import pytest
# gevent's subprocess: waiting for a peer's output must not freeze in-process servers.
from gevent import subprocess
import subprocess as std_subprocess

import zrpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "tests", "peers")


@pytest.fixture(params=["tcp", "ipc"])
def transport(request: Any) -> str:
    """Each test using this runs once over tcp and once over ipc."""
    return request.param


@pytest.fixture
def bind_endpoint(transport: str) -> Iterator[str]:
    """An endpoint to bind: a free tcp port on 127.0.0.1, or a fresh ipc path."""
    if transport == "tcp":
        yield "tcp://127.0.0.1:*"
    else:
        with tempfile.TemporaryDirectory(prefix="zrpc-") as tmp:
            yield f"ipc://{tmp}/sock"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """serve(methods, endpoint="tcp://127.0.0.1:*", **server_kwargs) -> bound endpoint.

    Starts a zrpc.Server in this process's hub; every server is closed after the test.
    The server object is available as serve.servers[-1].
    """
    servers: List[zrpc.Server] = []

    def _serve(methods: Any, endpoint: str = "tcp://127.0.0.1:*", **kwargs: Any) -> str:
        server = zrpc.Server(methods, **kwargs)
        servers.append(server)
        bound = server.bind(endpoint)
        server.start()
        return bound

    _serve.servers = servers  # type: ignore[attr-defined]
    yield _serve
    for server in servers:
        server.close()


@pytest.fixture
def client_factory() -> Iterator[Callable[..., zrpc.Client]]:
    """client_factory(endpoint, **kwargs) -> zrpc.Client, closed after the test."""
    clients: List[zrpc.Client] = []

    def _make(endpoint: Any = None, **kwargs: Any) -> zrpc.Client:
        client = zrpc.Client(endpoint, **kwargs)
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.close()


@pytest.fixture
def raw_dealer() -> Iterator[Callable[[str], Any]]:
    """raw_dealer(endpoint) -> a bare DEALER socket (zmq.green) connected to it: speaks frames, nothing else."""
    import zmq.green as zmq

    sockets: List[Any] = []

    def make(endpoint: str) -> Any:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def free_tcp_endpoint() -> str:
    """A tcp endpoint on 127.0.0.1 whose port was free a moment ago (for peers in other processes)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def spawn_peer(script: str, *args: str) -> subprocess.Popen:
    """Run tests/peers/SCRIPT in a separate Python process; it prints READY once serving."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(PEERS, script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    deadline = time.monotonic() + 30
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line or line.strip() == "READY":
            break
    if line.strip() != "READY":
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise RuntimeError(f"peer {script} did not start: {line!r}{out}\n{err}")
    return proc


def stop_peer(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


@pytest.fixture
def peer() -> Iterator[Callable[..., subprocess.Popen]]:
    """peer(script, *args) -> Popen of a separate process, killed after the test."""
    procs: List[subprocess.Popen] = []

    def _peer(script: str, *args: str) -> subprocess.Popen:
        proc = spawn_peer(script, *args)
        procs.append(proc)
        return proc

    yield _peer
    for proc in procs:
        stop_peer(proc)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.01) -> bool:
    """Poll predicate (yielding to gevent) until true or timeout; bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(step)
    return predicate()


def run_python(code: str, timeout: float = 60) -> "std_subprocess.CompletedProcess[str]":
    """Run ``code`` in a fresh interpreter (this Python, the repo on PYTHONPATH); its output as text."""
    return std_subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})


def refused_within(call: Callable[[], Any], error: type, timeout: float = 10.0) -> BaseException:
    """Call ``call()`` (yielding between tries) until it raises ``error``; return that exception.

    Fails the test if it still succeeds after ``timeout`` seconds (bounded: at most one try per 0.2 s).
    """
    refusals: List[BaseException] = []

    def refused_now() -> bool:
        try:
            call()
            return False
        except error as exc:
            refusals.append(exc)
            return True

    assert wait_until(refused_now, timeout=timeout, step=0.2), f"still no {error.__name__} after {timeout}s"
    return refusals[-1]


# -- zerorpc-node (tests/node/) --------------------------------------------------------
NODE_PEERS = os.path.join(ROOT, "tests", "node")
#: Bound on tests/node/install.sh (npm ci, compiling zeromq's addon, maybe apt-get).
NODE_INSTALL_TIMEOUT = 600


@pytest.fixture(scope="session")
def node_peers() -> str:
    """tests/node/ with zerorpc-node 0.9.8 installed: runs tests/node/install.sh on first use.

    Reuses node_modules while it matches package-lock.json (a stamp holds the
    lock's hash). Skips only when node or npm is not on PATH; a failed install
    fails the test with the installer's output.
    """
    import hashlib
    import shutil

    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the zerorpc-node interop tests need {' and '.join(missing)} on PATH")
    with open(os.path.join(NODE_PEERS, "package-lock.json"), "rb") as f:
        lock_hash = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(NODE_PEERS, "node_modules", ".zrpc-installed")

    def installed() -> bool:
        try:
            with open(stamp) as f:
                if f.read().strip() != lock_hash:
                    return False
        except OSError:
            return False
        probe = subprocess.run(["node", "-e", "require('zerorpc')"], cwd=NODE_PEERS,
                               capture_output=True, timeout=60)
        return probe.returncode == 0

    if not installed():
        try:
            run = subprocess.run(["sh", os.path.join(NODE_PEERS, "install.sh")], cwd=NODE_PEERS,
                                 capture_output=True, text=True, timeout=NODE_INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"installing zerorpc-node (tests/node/install.sh) took over {NODE_INSTALL_TIMEOUT}s")
        if run.returncode != 0:
            pytest.fail(f"installing zerorpc-node failed (sh tests/node/install.sh, exit {run.returncode}):\n"
                        f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
        with open(stamp, "w") as f:
            f.write(lock_hash)
        if not installed():
            pytest.fail("tests/node/install.sh succeeded but node still cannot load zerorpc")
    return NODE_PEERS
