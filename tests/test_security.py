"""CURVE encryption, ZAP admission (client keys, IP rules) and the caller's identity, over real tcp sockets.

Every test runs real CURVE handshakes on 127.0.0.1 (and 127.0.0.2 as a
second source address: libzmq connects from it with
``tcp://127.0.0.2:0;127.0.0.1:PORT``). Refusals are detected through the
client's socket monitor; waits are bounded with wait_until or call timeouts.
"""
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import gevent
import pytest
import zmq
import zmq.auth

import zrpc
from zrpc import security

from conftest import ROOT, refused_within, spawn_peer, stop_peer, wait_until


class Service:
    def __init__(self):
        self.ran = []

    def add(self, a, b):
        self.ran.append("add")
        return a + b

    def whoami(self):
        call = zrpc.current_call()
        return {"peer": call.peer_address, "user": call.user_id, "method": call.method}

    def echo(self, data):
        return data

    def slow(self, seconds):
        gevent.sleep(seconds)
        return "done"

    @zrpc.stream
    def count(self, n):
        for i in range(n):
            yield i


def from_source(endpoint, source):
    """The endpoint, connected from local address ``source`` (e.g. 127.0.0.2)."""
    return endpoint.replace("tcp://", f"tcp://{source}:0;", 1)


@pytest.fixture
def keys():
    server = zrpc.curve_keypair()
    client = zrpc.curve_keypair()
    return server, client


def test_encrypted_calls_streams_heartbeats_and_caller_identity(serve, client_factory, keys):
    (spub, ssec), (cpub, csec) = keys
    service = Service()
    endpoint = serve(service, curve_secret_key=ssec, heartbeat=0.2)
    client = client_factory(endpoint, curve_server_key=spub, curve_secret_key=csec, heartbeat=0.2, timeout=10)
    assert client.add(1, 2) == 3
    assert list(client.count(50)) == list(range(50))
    # a call much longer than the heartbeat interval survives on heartbeats alone
    assert client.slow(1.0) == "done"
    assert client.whoami() == {"peer": "127.0.0.1", "user": cpub.decode(), "method": "whoami"}
    assert client.with_options(timeout=10).call("echo", b"x" * 200_000) == b"x" * 200_000


def test_ephemeral_client_key_is_admitted_when_clients_are_not_limited(serve, client_factory, keys):
    (spub, ssec), _ = keys
    endpoint = serve(Service(), curve_secret_key=ssec)
    client = client_factory(endpoint, curve_server_key=spub, timeout=10)
    who = client.whoami()
    assert who["user"] == client._guard.public_key.decode() and len(who["user"]) == 40


def test_current_call_outside_a_method_raises():
    with pytest.raises(LookupError):
        zrpc.current_call()


def test_current_call_without_curve_gives_the_peer_address(serve, client_factory):
    endpoint = serve(Service())
    assert client_factory(endpoint, timeout=10).whoami() == {"peer": "127.0.0.1", "user": None, "method": "whoami"}


def test_allowed_and_unknown_client_keys(serve, client_factory, keys):
    (spub, ssec), (cpub, csec) = keys
    service = Service()
    endpoint = serve(service, curve_secret_key=ssec, curve_clients=[cpub])
    assert client_factory(endpoint, curve_server_key=spub, curve_secret_key=csec, timeout=10).add(2, 3) == 5
    stranger = client_factory(endpoint, curve_server_key=spub, timeout=10)  # ephemeral key, unknown
    started = time.monotonic()
    with pytest.raises(zrpc.AuthenticationFailed, match="refused"):
        stranger.add(1, 1)
    assert time.monotonic() - started < 5  # the handshake failure, not the 10 s timeout
    # later calls fail at once too; call_async puts the error in the future
    started = time.monotonic()
    with pytest.raises(zrpc.AuthenticationFailed):
        stranger.add.call_async(1, 1).get(timeout=5)
    assert time.monotonic() - started < 1
    assert service.ran == ["add"]  # the refused calls never ran
    assert isinstance(zrpc.AuthenticationFailed("x"), zrpc.ZrpcError)


def test_key_added_and_revoked_in_a_directory_while_serving(serve, client_factory, tmp_path):
    keydir = tmp_path / "clients"
    keydir.mkdir()
    spub, ssec = zrpc.curve_keypair()
    alice_pub, alice_sec = security.write_certificates(tmp_path / "alice")
    bob_pub, bob_sec = security.write_certificates(tmp_path / "bob")
    os.link(alice_pub, keydir / "alice.key")
    endpoint = serve(Service(), curve_secret_key=ssec, curve_clients=str(keydir))

    alice = client_factory(endpoint, curve_server_key=spub, curve_secret_key=alice_sec, timeout=10)
    assert alice.add(1, 1) == 2
    with pytest.raises(zrpc.AuthenticationFailed):
        client_factory(endpoint, curve_server_key=spub, curve_secret_key=bob_sec, timeout=10).add(1, 1)

    os.link(bob_pub, keydir / "bob.key")  # added without a restart
    assert client_factory(endpoint, curve_server_key=spub, curve_secret_key=bob_sec, timeout=10).add(2, 2) == 4

    os.unlink(keydir / "alice.key")  # revoked without a restart
    with pytest.raises(zrpc.AuthenticationFailed):  # a new connection is refused at the handshake
        client_factory(endpoint, curve_server_key=spub, curve_secret_key=alice_sec, timeout=10).add(1, 1)
    # the connection admitted before the revocation is refused call by call (rechecked within 1 s)
    refusal = refused_within(lambda: alice.add(1, 1), zrpc.AuthenticationFailed)
    assert "no longer admitted" in str(refusal)


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain"])
def test_ip_allow_and_deny_lists(serve, client_factory, keys, curve):
    (spub, ssec), _ = keys
    server_kw = {"curve_secret_key": ssec} if curve else {}
    client_kw = {"curve_server_key": spub} if curve else {}
    refused = zrpc.AuthenticationFailed  # every client socket is monitored, plain ones too

    service = Service()
    allowing = serve(service, allow_ips=["127.0.0.1/32", "10.0.0.0/8"], **server_kw)
    assert client_factory(allowing, timeout=10, **client_kw).add(1, 2) == 3
    with pytest.raises(refused):
        client_factory(from_source(allowing, "127.0.0.2"), timeout=2, **client_kw).add(1, 2)

    denying = serve(service, deny_ips=["127.0.0.2/31"], **server_kw)  # 127.0.0.2 and .3
    assert client_factory(from_source(denying, "127.0.0.4"), timeout=10, **client_kw).whoami()["peer"] == "127.0.0.4"
    with pytest.raises(refused):
        client_factory(from_source(denying, "127.0.0.3"), timeout=2, **client_kw).add(1, 2)
    assert service.ran == ["add"]


def test_ip_rules_match_networks_ipv4_and_ipv6():
    rules = security.IPRules(allow=["10.0.0.0/8", "::1", "2001:db8::/32"], deny=["10.9.0.0/16"])
    assert rules.refusal("10.1.2.3") is None
    assert rules.refusal("10.9.0.1") == "address denied"
    assert rules.refusal("192.168.1.1") == "address not allowed"
    assert rules.refusal("::1") is None and rules.refusal("2001:db8::7") is None
    assert rules.refusal("::ffff:10.1.2.3") is None  # IPv4-mapped IPv6 is matched as IPv4
    assert rules.refusal("fe80::1") == "address not allowed"
    with pytest.raises(ValueError, match="not an IP address"):
        security.IPRules(allow=["10.0.0.0/33"])


def test_ipv6_loopback_allowed(serve, client_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    service = Service()
    server = zrpc.Server(service, allow_ips=["::1/128"], socket_options={zmq.IPV6: 1})
    try:
        endpoint = server.bind("tcp://[::1]:*")
    except zmq.ZMQError as exc:
        server.close()
        pytest.skip(f"cannot bind ::1: {exc}")
    server.start()
    try:
        client = client_factory(endpoint, timeout=10, socket_options={zmq.IPV6: 1})
        assert client.whoami()["peer"] == "::1"
    finally:
        server.close()


def test_wrong_server_key_fails_fast(serve, client_factory, keys):
    (spub, ssec), _ = keys
    service = Service()
    endpoint = serve(service, curve_secret_key=ssec)
    wrong = zrpc.curve_keypair()[0]
    started = time.monotonic()
    with pytest.raises(zrpc.AuthenticationFailed, match="wrong server key"):
        client_factory(endpoint, curve_server_key=wrong, timeout=10).add(1, 1)
    assert time.monotonic() - started < 5
    assert service.ran == []


def test_plaintext_and_curve_never_talk(serve, client_factory, keys):
    (spub, ssec), _ = keys
    service = Service()
    curve_server = serve(service, curve_secret_key=ssec)
    with pytest.raises(zrpc.AuthenticationFailed, match="handshake failed"):
        client_factory(curve_server, timeout=10).add(1, 1)
    plain_server = serve(service)
    with pytest.raises(zrpc.AuthenticationFailed, match="handshake failed"):
        client_factory(plain_server, curve_server_key=spub, timeout=10).add(1, 1)
    assert service.ran == []


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.timeout(240)
def test_thousands_of_refused_handshakes_leak_nothing_and_do_not_flood_the_log(serve, client_factory, keys, caplog):
    (spub, ssec), (cpub, csec) = keys
    caplog.set_level(logging.WARNING, logger="zrpc.security")
    endpoint = serve(Service(), curve_secret_key=ssec, curve_clients=[cpub])
    policy = serve.servers[-1]._guard.policy

    def hammer(count):
        proc = spawn_peer("bad_handshakes.py", endpoint, spub.decode(), str(count))
        try:
            line = ""
            deadline = time.monotonic() + 200
            while time.monotonic() < deadline and not line.startswith("DONE"):
                line = proc.stdout.readline()
                if not line:
                    break
            return line.split()
        finally:
            stop_peer(proc)

    assert hammer(300) == ["DONE", "300", "0"]  # warm-up: allocator and zmq pools reach their size
    fds, rss = _fds(), _rss_kib()
    assert hammer(3000) == ["DONE", "3000", "0"]
    assert wait_until(lambda: _fds() <= fds, timeout=10)
    assert _rss_kib() - rss < 10 * 1024, "server memory grew by more than 10 MiB over 3000 refusals"
    assert policy.refused == 3300
    refusals = [r for r in caplog.records if r.name == "zrpc.security"]
    assert 1 <= len(refusals) <= 25  # once per address and reason, rate-limited
    assert all(csec.decode() not in r.getMessage() and ssec.decode() not in r.getMessage() for r in refusals)
    # the server still serves its real client
    assert client_factory(endpoint, curve_server_key=spub, curve_secret_key=csec, timeout=10).add(1, 1) == 2


def _capture_loopback(run):
    """Bytes of every packet on lo while ``run()`` runs (raw AF_PACKET socket; needs root)."""
    try:
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot open a raw packet socket to capture loopback traffic: {exc}")
    with raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024 * 1024)
        raw.bind(("lo", 0))
        raw.setblocking(False)
        captured = bytearray()
        done = threading.Event()

        def drain():
            while True:
                try:
                    captured.extend(raw.recv(65536))
                except BlockingIOError:
                    if done.is_set():
                        return
                    gevent.sleep(0.001)

        reader = gevent.spawn(drain)
        run()
        gevent.sleep(0.05)  # packets already delivered sit in the socket's buffer; drain them
        done.set()
        reader.join(10)
    return bytes(captured)


def test_payloads_are_not_in_the_clear(serve, client_factory, keys):
    (spub, ssec), _ = keys
    marker = b"ZRPC-SECRET-" + os.urandom(8).hex().encode()
    plain = serve(Service())
    curve = serve(Service(), curve_secret_key=ssec)
    plain_client = client_factory(plain, timeout=10)
    curve_client = client_factory(curve, curve_server_key=spub, timeout=10)
    plain_client.add(0, 0)  # connect before capturing
    curve_client.add(0, 0)

    seen_plain = _capture_loopback(lambda: plain_client.echo(marker + b"-plain"))
    seen_curve = _capture_loopback(lambda: curve_client.echo(marker + b"-curve"))
    assert marker + b"-plain" in seen_plain  # the control: the capture does see zrpc payloads
    assert b"echo" in seen_plain
    assert marker not in seen_curve
    assert len(seen_curve) > len(marker)  # traffic was captured, just not readable


def test_keys_from_certificate_files(serve, client_factory, tmp_path):
    server_pub, server_sec = security.write_certificates(tmp_path / "server")
    client_pub, client_sec = security.write_certificates(tmp_path / "client")
    assert stat.S_IMODE(os.stat(server_sec).st_mode) == 0o600
    assert zmq.auth.load_certificate(server_pub)[1] is None
    assert zmq.auth.load_certificate(server_sec)[1] is not None
    with pytest.raises(FileExistsError):
        security.write_certificates(tmp_path / "server")
    with pytest.raises(ValueError, match="no secret key"):
        zrpc.Server(Service(), curve_secret_key=server_pub)
    with pytest.raises(ValueError, match="neither"):
        zrpc.Client(None, curve_server_key="not-a-key")
    endpoint = serve(Service(), curve_secret_key=server_sec, curve_clients=[client_pub])
    client = client_factory(endpoint, curve_server_key=server_pub, curve_secret_key=client_sec, timeout=10)
    assert client.whoami()["user"] == zmq.auth.load_certificate(client_pub)[0].decode()


def test_two_curve_servers_share_one_context_each_with_its_policy(serve, client_factory):
    a_pub, a_sec = zrpc.curve_keypair()
    b_pub, b_sec = zrpc.curve_keypair()
    c_pub, c_sec = zrpc.curve_keypair()
    a = serve(Service(), curve_secret_key=a_sec, curve_clients=[c_pub])
    b = serve(Service(), curve_secret_key=b_sec, curve_clients=[])
    assert client_factory(a, curve_server_key=a_pub, curve_secret_key=c_sec, timeout=10).add(1, 1) == 2
    with pytest.raises(zrpc.AuthenticationFailed):
        client_factory(b, curve_server_key=b_pub, curve_secret_key=c_sec, timeout=10).add(1, 1)
    # closing one server leaves the other's ZAP handler running
    serve.servers[1].close()
    assert client_factory(a, curve_server_key=a_pub, curve_secret_key=c_sec, timeout=10).add(2, 2) == 4


# -- the command line ------------------------------------------------------------
def _cli(*args, cwd=ROOT, timeout=30):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-m", "zrpc", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def test_cli_keygen_serve_and_call_with_curve(tmp_path):
    from conftest import free_tcp_endpoint

    for name in ("server", "alice", "bob"):
        out = _cli("keygen", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().encode() == zmq.auth.load_certificate(str(tmp_path / f"{name}.key"))[0]
        assert stat.S_IMODE(os.stat(tmp_path / f"{name}.key_secret").st_mode) == 0o600
    again = _cli("keygen", str(tmp_path / "server"))
    assert again.returncode == 2 and "exists" in again.stderr
    clients = tmp_path / "clients"
    clients.mkdir()
    os.link(tmp_path / "alice.key", clients / "alice.key")

    endpoint = free_tcp_endpoint()
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "zrpc", "serve", "--bind", endpoint,
         "--curve-secret", str(tmp_path / "server.key_secret"), "--curve-clients", str(clients),
         "--allow-ip", "127.0.0.0/8", "--deny-ip", "127.0.0.9", "examples.hello_server:Hello"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        line = server.stderr.readline()  # "serving ... on ENDPOINT" (or the error that stopped it)
        assert line.startswith("serving "), line + server.stderr.read()
        server_key = str(tmp_path / "server.key")
        ok = _cli("--curve-server-key", server_key, "--curve-secret", str(tmp_path / "alice.key_secret"),
                  "-j", endpoint, "add", "2", "3")
        assert (ok.returncode, ok.stdout) == (0, "5\n"), ok.stderr
        z85 = zmq.auth.load_certificate(server_key)[0].decode()
        ok2 = _cli("--curve-server-key", z85, "--curve-secret", str(tmp_path / "alice.key_secret"),
                   endpoint, "hello", "curve")
        assert ok2.returncode == 0 and "curve" in ok2.stdout, ok2.stderr
        refused = _cli("--curve-server-key", server_key, "--curve-secret", str(tmp_path / "bob.key_secret"),
                       "-t", "10", endpoint, "add", "1", "2")
        assert refused.returncode == 7 and "authentication failed" in refused.stderr, refused.stderr
        wrong = _cli("--curve-server-key", str(tmp_path / "bob.key"), "-t", "10", endpoint, "add", "1", "2")
        assert wrong.returncode == 7, wrong.stderr
        plain = _cli("-t", "1", endpoint, "add", "1", "2")
        assert plain.returncode == 7 and "handshake failed" in plain.stderr, plain.stderr  # a plaintext call never gets through
        bad = _cli("--curve-server-key", str(tmp_path / "nope.key"), endpoint, "add")
        assert bad.returncode == 2 and "neither" in bad.stderr
        secret_missing = _cli("--curve-server-key", server_key, "--curve-secret", server_key, endpoint, "add")
        assert secret_missing.returncode == 2 and "no secret key" in secret_missing.stderr
    finally:
        server.terminate()
        server.communicate(timeout=20)
    bad_net = _cli("serve", "--bind", endpoint, "--allow-ip", "300.1.1.1", "examples.hello_server:Hello")
    assert bad_net.returncode == 2 and "--allow-ip" in bad_net.stderr, bad_net.stderr
