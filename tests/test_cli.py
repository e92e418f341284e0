"""The zrpc command line, run the way a user runs it.

Every check starts the CLI in a subprocess (``python -m zrpc``, ``bin/zrpc`` and
the installed console script) against real servers in other processes: a zrpc
server started by ``zrpc serve`` itself (tests/peers/cli_service.py) and a real
zerorpc 0.6.3 server (tests/peers/cli_zerorpc_server.py). Output and exit
statuses are asserted exactly where they are part of the CLI's contract.
Waits are on output lines, marker files or process exits, always bounded.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import msgpack
import pytest
import zmq

import zrpc

from conftest import PEERS, ROOT, free_tcp_endpoint, spawn_peer, stop_peer

VENV_BIN = os.path.dirname(sys.executable)
CONSOLE_SCRIPT = shutil.which("zrpc", path=VENV_BIN)
BIN_ZRPC = os.path.join(ROOT, "bin", "zrpc")

# Exit statuses, as documented in `zrpc --help`.
REMOTE, USAGE, TIMEOUT, LOST, KWARGS, PROTOCOL, INTERRUPTED, BROKEN_PIPE = 1, 2, 3, 4, 5, 6, 130, 141


def cli_env(**extra: str) -> Dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", **extra}
    env.pop("PYTHONPATH", None)  # the CLI must find zrpc (and cwd modules) on its own
    return env


def zrpc_argv(*args: str) -> List[str]:
    return [sys.executable, "-m", "zrpc", *args]


def run(*args: str, timeout: float = 30, argv: Optional[List[str]] = None,
        cwd: str = ROOT, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run the CLI to completion (python -m zrpc unless ``argv`` is given)."""
    return subprocess.run(argv or zrpc_argv(*args), capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout, cwd=cwd, env=env or cli_env())


def assert_error(proc: subprocess.CompletedProcess, status: int, *fragments: str) -> None:
    """A user-facing failure: the documented status, zrpc: lines on stderr, nothing on stdout."""
    detail = f"status {proc.returncode}\nstdout: {proc.stdout!r}\nstderr: {proc.stderr}"
    assert proc.returncode == status, detail
    assert proc.stdout == "", detail
    assert proc.stderr.startswith("zrpc: ") or proc.stderr.startswith("remote traceback:"), detail
    assert "Traceback" not in proc.stderr or "remote traceback:" in proc.stderr, detail
    for fragment in fragments:
        assert fragment in proc.stderr, f"{fragment!r} not in stderr\n{detail}"


def wait_for_file(path: str, timeout: float = 10.0) -> bool:
    """Bounded poll for a marker file written by the server process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return os.path.exists(path)


class Background:
    """A process whose output lines are collected by threads: waits are bounded, pipes never fill."""

    def __init__(self, argv: List[str], cwd: str = ROOT, env: Optional[Dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     encoding="utf-8", cwd=cwd, env=env or cli_env())
        self.out: List[str] = []
        self.err: List[str] = []
        self._cond = threading.Condition()
        self._pumps = [threading.Thread(target=self._pump, args=(pipe, lines), daemon=True)
                       for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for pump in self._pumps:
            pump.start()

    def _pump(self, pipe: Any, lines: List[str]) -> None:
        for line in iter(pipe.readline, ""):
            with self._cond:
                lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, lines: List[str], fragment: str, timeout: float = 20.0) -> str:
        """The first line of ``lines`` (self.out or self.err) containing ``fragment``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in lines:
                    if fragment in line:
                        return line
                remaining = deadline - time.monotonic()
                ended = not any(p.is_alive() for p in self._pumps)
                if remaining <= 0 or ended:
                    raise AssertionError(f"no line with {fragment!r} after {timeout}s "
                                         f"(exit: {self.proc.poll()})\nstdout: {self.stdout}\nstderr: {self.stderr}")
                self._cond.wait(min(remaining, 0.5))

    def finish(self, sig: Optional[int] = None, timeout: float = 20.0) -> int:
        """Send ``sig`` (if any), wait for the exit and the end of output; return the status."""
        if sig is not None:
            self.proc.send_signal(sig)
        status = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def start_serve(*args: str, markers: Optional[str] = None, console: bool = False) -> Background:
    """``zrpc serve ARGS`` run from tests/peers (cli_service is found only through cwd on sys.path)."""
    argv = [CONSOLE_SCRIPT, "serve", *args] if console else zrpc_argv("serve", *args)
    env = cli_env(ZRPC_CLI_MARKERS=markers) if markers else cli_env()
    return Background(argv, cwd=PEERS, env=env)


# -- servers shared by the module ------------------------------------------------------
@pytest.fixture(scope="module")
def markers(tmp_path_factory: Any) -> str:
    return str(tmp_path_factory.mktemp("markers"))


@pytest.fixture(scope="module")
def service(markers: str) -> Iterator[str]:
    """A zrpc server: the installed console script serving tests/peers/cli_service.py."""
    assert CONSOLE_SCRIPT, f"no zrpc console script in {VENV_BIN}"
    endpoint = free_tcp_endpoint()
    server = start_serve("--bind", endpoint, "cli_service:Service", markers=markers, console=True)
    try:
        server.wait_for(server.err, f"serving cli_service:Service on {endpoint}")
        yield endpoint
        assert server.finish(signal.SIGTERM) == 0, server.stderr
        assert "zrpc: stopped" in server.stderr
    finally:
        server.kill()


@pytest.fixture(scope="module")
def legacy() -> Iterator[str]:
    """A real zerorpc 0.6.3 server in its own process."""
    endpoint = free_tcp_endpoint()
    proc = spawn_peer("cli_zerorpc_server.py", endpoint)
    try:
        yield endpoint
    finally:
        stop_peer(proc)


# -- entry points, help, version -----------------------------------------------------------
def test_three_entry_points_run_the_same_cli(service: str) -> None:
    version = f"zrpc {zrpc.__version__}\n"
    assert CONSOLE_SCRIPT
    for argv in (zrpc_argv("--version"), [sys.executable, BIN_ZRPC, "--version"],
                 [CONSOLE_SCRIPT, "--version"], zrpc_argv("-V")):
        proc = run(argv=argv)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, version, ""), argv
    # bin/zrpc from anywhere (here: from tests/peers, with no PYTHONPATH) makes a real call.
    proc = run(argv=[sys.executable, BIN_ZRPC, service, "echo", "from bin"], cwd=PEERS)
    assert (proc.returncode, proc.stdout) == (0, '[["from bin"], {}]\n'), proc.stderr


def test_help_documents_usage_and_exit_statuses() -> None:
    proc = run("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for fragment in ("zrpc [OPTIONS] ENDPOINT [METHOD [ARG...]]", "-k NAME=VALUE", "--json",
                     "--timeout", "--heartbeat", "--connect", "--bind", "--array", "--raw",
                     "--traceback", "--debug", "zrpc serve", "exit status:"):
        assert fragment in proc.stdout, fragment
    statuses = re.findall(r"^  (\d+) ", proc.stdout, re.M)
    assert statuses == ["0", "1", "2", "3", "4", "5", "6", "7", "130", "141"]
    serve_help = run("serve", "--help")
    assert serve_help.returncode == 0
    for fragment in ("MODULE[:OBJECT]", "--pool-size", "--grace", "--name", "SIGTERM", "exit status:"):
        assert fragment in serve_help.stdout, fragment
    # No arguments at all: the help, on stderr, as a usage error.
    bare = run()
    assert bare.returncode == USAGE and bare.stdout == "" and "exit status:" in bare.stderr


# -- calls against the zrpc server -------------------------------------------------------
def test_arguments_are_strings_by_default(service: str) -> None:
    proc = run(service, "echo", "a", "1", "a=b", "[2]")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, '[["a", "1", "a=b", "[2]"], {}]\n', "")


def test_json_arguments(service: str) -> None:
    proc = run("-j", service, "echo", "1", '"x"', "[1, 2]", '{"k": null}', "2.5", "true")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[1, "x", [1, 2], {"k": None}, 2.5, True], {}]
    # Options may come after the method; -- protects arguments that start with a dash.
    proc = run(service, "echo", "-j", "--", "-1", "-x")
    assert proc.returncode == USAGE  # "-x" is not JSON
    proc = run(service, "echo", "--", "-1", "-x")
    assert (proc.returncode, proc.stdout) == (0, '[["-1", "-x"], {}]\n'), proc.stderr


def test_keyword_arguments(service: str) -> None:
    proc = run("-j", service, "kwonly", "1", "-k", "c=10", "--kwarg", "b=2")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "13\n", "")
    # Without -j a VALUE is a string; only the first "=" separates NAME from VALUE.
    proc = run(service, "echo", "-k", "name=Python", "-k", "q=a=b", "-k", "empty=")
    assert json.loads(proc.stdout) == [[], {"name": "Python", "q": "a=b", "empty": ""}], proc.stderr
    assert_error(run(service, "echo", "-k", "novalue"), USAGE, "NAME=VALUE", "'novalue'")
    assert_error(run(service, "echo", "-k", "1x=2"), USAGE, "NAME=VALUE")
    assert_error(run(service, "echo", "-k", "a=1", "-k", "a=2"), USAGE, "'a' given twice")


def test_bad_arguments_say_what_is_wrong(service: str) -> None:
    assert_error(run("-j", service, "echo", "1", "abc"), USAGE, "argument 2 is not valid JSON", "'abc'")
    assert_error(run("-j", service, "echo", "-k", "a={"), USAGE, "keyword argument 'a' is not valid JSON")
    # Valid JSON that msgpack cannot carry.
    assert_error(run("-j", service, "echo", "123456789012345678901234567890"), USAGE,
                 "cannot send the arguments of echo()")
    assert_error(run(service, "echo", "-x"), USAGE, "unrecognized arguments: -x", "put --")
    assert_error(run(service, "echo", "--timeout", "soon"), USAGE, "'soon' is not a number of seconds")
    assert_error(run("serve-me", "echo"), USAGE, "'serve-me' is not an endpoint")
    assert_error(run("--debug", "serve", "time"), USAGE,
                 "'serve' must be the first word")


def test_results_are_json_bytes_are_documented(service: str) -> None:
    proc = run(service, "nested")
    assert proc.stdout == '{"name": "café", "data": ["ok", "b\'\\\\xfe\'"], "n": 1}\n', proc.stderr
    assert json.loads(proc.stdout)["data"][1] == "b'\\xfe'"  # the repr of the undecodable bytes
    assert run(service, "blob", "text").stdout == '"héllo"\n'  # bytes that are UTF-8: as text
    assert run(service, "blob").stdout == '"b\'\\\\xff\\\\x00zrpc\'"\n'
    assert run("--indent", "2", service, "nested").stdout.startswith('{\n  "name": "café",\n')
    # --raw: str without quotes; bytes written exactly as received.
    assert run("--raw", service, "echo").stdout == "[[], {}]\n"
    assert run("--raw", "-j", service, "kwonly", "1").stdout == "1\n"
    raw = subprocess.run(zrpc_argv("--raw", service, "blob"), capture_output=True, timeout=30, env=cli_env())
    assert (raw.returncode, raw.stdout) == (0, b"\xff\x00zrpc"), raw.stderr


def test_streams_print_one_line_per_item_or_an_array(service: str) -> None:
    proc = run(service, "letters", "héllo")
    assert (proc.returncode, proc.stdout) == (0, '"h"\n"é"\n"l"\n"l"\n"o"\n'), proc.stderr
    assert run(service, "letters", "héllo", "--array").stdout == '["h", "é", "l", "l", "o"]\n'
    assert run(service, "letters", "", "-a").stdout == "[]\n"
    assert run(service, "letters", "ab", "--raw").stdout == "a\nb\n"


def test_stream_items_are_printed_as_they_arrive(service: str, markers: str) -> None:
    """An endless stream: each line shows up while the server is still producing."""
    cli = Background(zrpc_argv(service, "ticks", "0.05", "arrive"))
    try:
        for i in range(3):
            cli.wait_for(cli.out, f"{i}\n")
        assert cli.proc.poll() is None  # still streaming
        assert not os.path.exists(os.path.join(markers, "arrive.closed"))
    finally:
        cli.finish(signal.SIGINT)
    assert wait_for_file(os.path.join(markers, "arrive.closed"))


def test_listing_a_zrpc_service(service: str) -> None:
    proc = run(service)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "[Service]"
    names = [re.match(r"\w+", line).group(0) for line in lines[1:]]
    assert names == ["blob", "echo", "fail", "kwonly", "letters", "nested", "slow", "ticks"]
    text = proc.stdout
    assert re.search(r"^kwonly\(a, b=0, \*, c=0\) +Return a \+ b \+ c\.$", text, re.M), text
    assert re.search(r"^echo\(\*args, \*\*kwargs\) +Return \[args, kwargs\] exactly as received\.$",
                     text, re.M), text
    assert re.search(r"^ticks\(interval=0\.05, tag='ticks'\)  \[stream\] +Stream 0, 1, 2", text, re.M), text
    assert "Second line" not in text  # only the first line of each doc


def test_method_help(service: str) -> None:
    proc = run(service, "echo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("[Service] echo(*args, **kwargs)\n\nReturn [args, kwargs] exactly as received.\n\n"
                           "Second line of the doc, only shown by METHOD --help.\n")
    stream_help = run(service, "ticks", "-h").stdout
    assert stream_help.startswith("[Service] ticks(interval=0.05, tag='ticks')\n(a stream")
    assert_error(run(service, "nope", "--help"), REMOTE, "no method 'nope'")


def test_remote_errors(service: str) -> None:
    proc = run(service, "fail", "boom")
    assert_error(proc, REMOTE, "zrpc: remote ValueError: boom")
    assert "Traceback" not in proc.stderr
    proc = run(service, "fail", "boom", "--traceback")
    assert_error(proc, REMOTE, "remote traceback:\nTraceback (most recent call last):",
                 "cli_service.py", "raise ValueError(message)", "zrpc: remote ValueError: boom")
    assert_error(run(service, "nope"), REMOTE, "remote NameError", "no method 'nope'")


def test_timeout_names_the_endpoint_and_the_delay() -> None:
    dead = free_tcp_endpoint()  # nothing listens there
    start = time.monotonic()
    proc = run("--timeout", "0.5", dead, "echo")
    elapsed = time.monotonic() - start
    assert_error(proc, TIMEOUT, "0.5s", dead, "echo()")
    assert 0.4 < elapsed < 10


@pytest.mark.parametrize("endpoint, fragment", [
    ("tcp://nohost", "needs a port"),
    ("foo://x", "Protocol not supported"),
    ("ipc://", "Invalid argument"),
])
def test_bad_endpoint(endpoint: str, fragment: str) -> None:
    assert_error(run(endpoint, "echo"), USAGE, f"cannot connect to '{endpoint}'", fragment)


def test_lost_server_exits_4(markers: str) -> None:
    """A server frozen mid-call (SIGSTOP) stops heartbeating: the CLI gives up after two intervals."""
    endpoint = free_tcp_endpoint()
    server = start_serve("--heartbeat", "0.2", "--bind", endpoint, "cli_service:Service", markers=markers)
    try:
        server.wait_for(server.err, "serving")
        cli = Background(zrpc_argv("--heartbeat", "0.2", endpoint, "slow", "30", "lost"))
        assert wait_for_file(os.path.join(markers, "lost.started"))
        server.proc.send_signal(signal.SIGSTOP)
        try:
            status = cli.finish(timeout=20)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert status == LOST, cli.stderr
        assert cli.stderr.startswith("zrpc: lost the server") and "Traceback" not in cli.stderr
    finally:
        server.kill()


def test_unintelligible_reply_exits_6() -> None:
    """A server answering OK without a result (a hand-made ROUTER in a thread)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    cli = Background(zrpc_argv("-t", "20", f"tcp://127.0.0.1:{port}", "anything"))
    try:
        assert sock.poll(20000), "the CLI's request never came"
        *envelope, payload = sock.recv_multipart()
        header = msgpack.unpackb(payload, raw=False)[0]
        reply = [{"message_id": b"x" * 32, "v": 3, "response_to": header["message_id"]}, "OK", []]
        sock.send_multipart([*envelope, msgpack.packb(reply, use_bin_type=True)])
        assert cli.finish() == PROTOCOL, cli.stderr
        assert cli.stderr.startswith("zrpc: bad reply from the server") and "OK reply" in cli.stderr
    finally:
        cli.kill()
        sock.close()
        ctx.term()


def test_debug_prints_the_events(service: str) -> None:
    proc = run("-d", service, "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, '[["hi"], {}]\n')
    assert re.search(r"^zrpc: >> echo \['hi'\] id=", proc.stderr, re.M), proc.stderr
    assert re.search(r"^zrpc: << OK \[\[\['hi'\], \{\}\]\] id=\w+ response_to=", proc.stderr, re.M), proc.stderr


def test_serve_debug_prints_the_events(markers: str) -> None:
    """zrpc serve -d: the server's side of the same call, received (<<) then sent (>>)."""
    endpoint = free_tcp_endpoint()
    server = start_serve("-d", "--bind", endpoint, "cli_service:Service", markers=markers)
    try:
        server.wait_for(server.err, "serving")
        assert run(endpoint, "echo", "hi").stdout == '[["hi"], {}]\n'
        request = server.wait_for(server.err, "zrpc: << echo ['hi'] id=")
        reply = server.wait_for(server.err, "zrpc: >> OK [[['hi'], {}]] id=")
        request_id = re.search(r" id=(\w+)", request).group(1)
        assert reply.rstrip("\n").endswith(f" response_to={request_id}"), server.stderr
        assert server.finish(signal.SIGTERM) == 0, server.stderr
    finally:
        server.kill()


def test_broken_pipe_ends_quietly_and_cancels_the_stream(service: str, markers: str) -> None:
    cli = subprocess.Popen(zrpc_argv(service, "ticks", "0.01", "pipe"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=cli_env())
    try:
        assert cli.stdout.readline() == b"0\n"
        cli.stdout.close()  # like `| head -1`
        assert cli.wait(20) == BROKEN_PIPE
        assert cli.stderr.read() == b""
    finally:
        if cli.poll() is None:
            cli.kill()
        cli.wait(10)
        cli.stderr.close()
    assert wait_for_file(os.path.join(markers, "pipe.closed"))


# -- against a real zerorpc 0.6.3 server -------------------------------------------------------
def test_zerorpc_server_calls_and_streams(legacy: str) -> None:
    assert run(legacy, "hello", "zerorpc").stdout == '"Hello, zerorpc!"\n'
    assert run("-j", legacy, "add", "1", "2").stdout == "3\n"
    assert run(legacy, "add", "1", "2").stdout == '"12"\n'
    assert run("-j", legacy, "count", "3").stdout == "0\n1\n2\n"
    assert run("-j", "--array", legacy, "count", "3").stdout == "[0, 1, 2]\n"
    assert_error(run(legacy, "fail"), REMOTE, "zrpc: remote KeyError: 'missing'")


def test_zerorpc_server_refuses_keyword_arguments_clearly(legacy: str) -> None:
    assert_error(run(legacy, "hello", "-k", "name=x"), KWARGS,
                 "hello() was called with keyword arguments (name)", "pass them positionally")


def test_zerorpc_server_listing_falls_back(legacy: str) -> None:
    """zerorpc 0.6.3 on Python 3.11 fails _zerorpc_inspect: the list still shows names and docs."""
    proc = run(legacy)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("[legacy]\n"
                           "add(...)    Return a + b.\n"
                           "count(...)  Stream 0 .. N-1.\n"
                           "fail(...)   Raise KeyError('missing').\n"
                           "hello(...)  Greet NAME.\n")
    proc = run(legacy, "add", "--help")
    assert proc.stdout == "[legacy] add(...)\n\nReturn a + b.\n\nWorks on numbers and strings alike.\n"
    assert_error(run(legacy, "nope", "--help"), REMOTE, "no method 'nope'")


def test_zerorpc_server_is_asked_for_arguments_once() -> None:
    """_zerorpc_args failing like _zerorpc_inspect (getargspec) is asked once, not once per method.

    zerorpc logs a traceback on its stderr for every built-in call that fails, so
    that stderr counts the failing calls: per command, one _zerorpc_inspect and one
    _zerorpc_args, whatever the number of methods (four here).
    """
    endpoint = free_tcp_endpoint()
    proc = spawn_peer("cli_zerorpc_server.py", endpoint)
    try:
        listing = run(endpoint)
        helped = run(endpoint, "add", "--help")
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=10)
    assert (listing.returncode, helped.returncode) == (0, 0), listing.stderr + helped.stderr
    assert len(listing.stdout.splitlines()) == 5 and "(...)" in listing.stdout, listing.stdout
    assert helped.stdout.startswith("[legacy] add(...)\n"), helped.stdout
    # One logged failure ends with this line; what precedes it says which built-in failed.
    *failures, rest = stderr.split("AttributeError: module 'inspect' has no attribute 'getargspec'")
    assert "Traceback" not in rest, stderr  # no other failure was logged
    inspects = [tb for tb in failures if "in _zerorpc_inspect" in tb]
    assert (len(inspects), len(failures) - len(inspects)) == (2, 2), stderr


# -- serving ----------------------------------------------------------------------------
def test_serve_the_time_module_and_call_it_both_ways() -> None:
    endpoint = free_tcp_endpoint()
    server = Background(zrpc_argv("serve", "--bind", endpoint, "--pool-size", "4", "time"))
    try:
        assert server.wait_for(server.err, "serving") == f"serving time on {endpoint}\n"
        before = time.time()
        proc = run(endpoint, "time")
        assert proc.returncode == 0, proc.stderr
        remote_now = json.loads(proc.stdout)
        assert isinstance(remote_now, float) and before - 5 < remote_now < time.time() + 5
        listing = run(endpoint).stdout
        assert listing.startswith("[time]\n") and re.search(r"^sleep\(", listing, re.M), listing
        assert run("-j", endpoint, "sleep", "0.01").stdout == "null\n"
        assert server.finish(signal.SIGINT) == 0, server.stderr
        assert "SIGINT: stopping" in server.stderr and server.err[-1] == "zrpc: stopped\n"
    finally:
        server.kill()
    # Reverse direction: the CLI binds, the server connects to it.
    endpoint = free_tcp_endpoint()
    cli = Background(zrpc_argv("--bind", endpoint, "-t", "20", "time"))
    server = Background(zrpc_argv("serve", "--connect", endpoint, "--name", "clock", "time"))
    try:
        cli.wait_for(cli.err, f"bound {endpoint}")
        assert cli.finish() == 0, cli.stderr
        assert isinstance(json.loads(cli.stdout), float)
        assert server.finish(signal.SIGTERM) == 0, server.stderr
    finally:
        cli.kill()
        server.kill()


def test_serve_errors_are_usage_errors() -> None:
    assert_error(run("serve", "--bind", "tcp://127.0.0.1:1", "no_such_module_zrpc"), USAGE,
                 "cannot import 'no_such_module_zrpc'")
    assert_error(run("serve", "--bind", "tcp://127.0.0.1:1", "time:nothing"), USAGE,
                 "'time' has no attribute 'nothing'")
    assert_error(run("serve", "time"), USAGE, "nowhere to serve")
    assert_error(run("serve", "--bind", "foo://x", "time"), USAGE, "cannot bind 'foo://x'")
    assert_error(run("serve", "--bind", "tcp://127.0.0.1:1"), USAGE, "no MODULE[:OBJECT]")
    assert_error(run("serve", "--pool-size", "0", "--bind", "tcp://127.0.0.1:1", "time"), USAGE,
                 "must be at least 1")


def test_sigterm_lets_the_call_in_flight_finish(markers: str) -> None:
    endpoint = free_tcp_endpoint()
    server = start_serve("--bind", endpoint, "--grace", "10", "cli_service:Service", markers=markers)
    cli = None
    try:
        server.wait_for(server.err, "serving")
        cli = Background(zrpc_argv(endpoint, "slow", "1", "term"))
        assert wait_for_file(os.path.join(markers, "term.started"))
        assert not os.path.exists(os.path.join(markers, "term.done"))
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(server.err, "SIGTERM: stopping; calls in flight have 10s to finish")
        assert cli.finish() == 0, cli.stderr
        assert cli.stdout == '"done"\n'
        assert server.finish() == 0, server.stderr
        assert server.err[-1] == "zrpc: stopped\n"
    finally:
        server.kill()
        if cli is not None:
            cli.kill()


def test_ctrl_c_on_a_stream_stops_the_servers_generator(markers: str) -> None:
    """The generator sleeps 30 s between items and heartbeats are 30 s: only the cancel can stop it."""
    endpoint = free_tcp_endpoint()
    server = start_serve("--heartbeat", "30", "--bind", endpoint, "cli_service:Service", markers=markers)
    try:
        server.wait_for(server.err, "serving")
        cli = Background(zrpc_argv("--heartbeat", "30", endpoint, "ticks", "30", "ctrlc"))
        cli.wait_for(cli.out, "0\n")
        assert wait_for_file(os.path.join(markers, "ctrlc.started"))
        assert not os.path.exists(os.path.join(markers, "ctrlc.closed"))
        assert cli.finish(signal.SIGINT) == INTERRUPTED
        assert (cli.stdout, cli.stderr) == ("0\n", "zrpc: interrupted\n")
        assert wait_for_file(os.path.join(markers, "ctrlc.closed"), timeout=5)
        # The server is still fine afterwards.
        assert run("-j", endpoint, "kwonly", "2").stdout == "2\n"
    finally:
        server.kill()


# -- the demo ---------------------------------------------------------------------------
def test_demo_script() -> None:
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    env = cli_env(ZRPC_DEMO_PORT=port, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["sh", os.path.join("examples", "demo.sh")], capture_output=True, text=True,
                          encoding="utf-8", timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for fragment in (
        f"$ zrpc tcp://127.0.0.1:{port}\n[Hello]\n",
        '\n"Hello, zrpc!"\n',
        "\n30\n",
        '\n["Monty Python", "Brian Python"]\n',
        "\n0\n1\n2\n3\n4\n",
        "\n[0, 1, 2, 3, 4]\n",
        "[Hello] add(a: float, b: float) -> float\n\nReturn a + b.\n",
        "(exit status 1 = remote error)\n",
        "server exited with status 0\n",
    ):
        assert fragment in out, f"{fragment!r} not in the demo's output:\n{out}"
    assert f"serving examples.hello_server:Hello on tcp://127.0.0.1:{port}\n" in proc.stderr
    assert "zrpc: remote ValueError: boom\n" in proc.stderr
    # The server is gone: its port can be listened on again.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
