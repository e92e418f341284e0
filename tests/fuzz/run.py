"""The frame fuzzer: mutated zerorpc frames at a server in its own process, checked end to end.

Invariants checked (each failure is listed in the report's ``failures``):

* every frame whose header zrpc can read, and that is a request, gets a
  reply (an ERR ``ProtocolError`` when it is bad): none lost;
* the real calls a well-behaved client makes meanwhile all return the right
  result (none lost, none wrong), including a long call with heartbeat=1
  while the server decodes max-size hostile messages;
* the server is alive after, its RSS grew by less than ``rss_slack`` bytes
  and its open fds did not grow; its log has one line per record, nothing
  at ERROR, nothing that reached the transport's catch-all.
"""
from __future__ import annotations

import itertools
import random
import time
from typing import Any, Dict, List, Optional, Set

import gevent
import msgpack
import zmq.green as zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

import zrpc
from zrpc.core import protocol

from . import frames as fz
from .procs import ServerPeer, log_problems

__all__ = ["fuzz_frames"]

MAX_SIZE = 8 * 1024 * 1024  # the max_message_size
_MAX_OUTSTANDING = 2000


def expected_reply(frame: bytes) -> Optional[Any]:
    """The message id the server must answer, or None if it must stay silent (per zrpc's protocol)."""
    try:
        header, name, _ = protocol.decode(frame, MAX_SIZE)
    except protocol.ProtocolError as exc:
        header = exc.header
        if header is not None and header.get("response_to") is None:
            return header["message_id"]
        return None
    if header.get("response_to") is not None or name in protocol.CONTROL_EVENTS:
        return None
    return header["message_id"]


class _Raw:
    """A bare DEALER that sends frames and collects the reply ids, on its own greenlet."""

    def __init__(self, endpoint: str, outstanding: Dict[Any, float]) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = self.sock.rcvhwm = 10000
        self.sock.connect(endpoint)
        self.outstanding = outstanding
        self.replies = 0
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            frames = self.sock.recv_multipart()
            try:
                header = msgpack.unpackb(frames[-1], raw=False, strict_map_key=False)[0]
            except Exception:
                continue
            self.replies += 1
            self.outstanding.pop(header.get("response_to"), None)

    def send(self, frame: bytes) -> None:
        for _ in range(10000):
            try:
                self.sock.send_multipart([b"", frame], flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                gevent.sleep(0.001)
        raise RuntimeError("the server stopped reading for 10 s")

    def close(self) -> None:
        self.reader.kill()
        self.sock.close()


def _client_loop(client: zrpc.Client, stats: Dict[str, int], rnd: random.Random) -> None:
    """Real calls with checked results, as long as the fuzz runs."""
    for i in itertools.count():
        value: Any = rnd.choice([i, str(i) * 3, [i, {"k": b"v" * (i % 50)}], None, 1.5])
        try:
            if i % 2:
                ok = client.add(i, i + 1) == 2 * i + 1
            else:
                ok = client.echo(value) == value
            stats["ok" if ok else "wrong"] += 1
        except Exception as exc:  # any failure of a well-behaved call is a lost call
            stats["lost"] += 1
            stats.setdefault("errors", []).append(repr(exc)[:200])  # type: ignore[attr-defined]
        gevent.sleep(0.001)


def _bombs(peer: ServerPeer, raw: _Raw, outstanding: Dict[Any, float], count: int, size: int,
           report: Dict[str, Any]) -> None:
    """Max-size hostile messages, one at a time: peak memory, loop stall, and a long call that must survive."""
    if not count:
        return
    client = zrpc.Client(peer.endpoint, heartbeat=1, timeout=60)
    try:
        long_call = client.call_async("sleep", 1.5 + 0.8 * count)
        gevent.sleep(0.3)
        probe = zrpc.Client(peer.endpoint, timeout=30)
        peaks, stalls = [], []
        for n in range(count):
            probe.stall()
            before = peer.status()
            mid = b"bomb%04d" % n
            outstanding[mid] = time.monotonic()
            raw.send(fz.bomb(size, {"message_id": mid, "v": 3}))
            deadline = time.monotonic() + 30
            while mid in outstanding and time.monotonic() < deadline:
                gevent.sleep(0.01)
            if mid in outstanding:
                report["failures"].append(f"hostile message {n} got no ERR within 30 s")
            after = peer.status()
            gevent.sleep(0.2)  # the probe records its lateness when it wakes, maybe after the ERR left
            peaks.append((after["VmHWM"] - before["VmRSS"]) / size)
            stalls.append(probe.stall())
        probe.close()
        try:
            long_call.get()
        except Exception as exc:
            report["failures"].append(f"a long call (heartbeat=1) failed during hostile messages: {exc!r}")
        report["bomb_size"] = size
        report["bomb_peak_x"] = round(max(peaks), 1)
        report["bomb_stall_s"] = round(max(stalls), 3)
    finally:
        client.close()


def fuzz_frames(frames: int = 300_000, seconds: Optional[float] = None, seed: Optional[int] = None,
                batch: int = 200, sockets: int = 4, bombs: int = 3, bomb_size: int = MAX_SIZE,
                rss_slack: int = 48 << 20) -> Dict[str, Any]:
    """Run the frame fuzzer; return a report (``report["failures"]`` is empty when every invariant held)."""
    seed = random.randrange(2 ** 32) if seed is None else seed
    report: Dict[str, Any] = {"seed": seed, "failures": []}
    rnd = random.Random(seed)
    with ServerPeer(heartbeat=1.0, max_size=MAX_SIZE) as peer:
        outstanding: Dict[Any, float] = {}
        raws = [_Raw(peer.endpoint, outstanding) for _ in range(sockets)]
        client = zrpc.Client(peer.endpoint, heartbeat=1, timeout=20)
        stats: Dict[str, Any] = {"ok": 0, "wrong": 0, "lost": 0}
        caller = None
        try:
            client._zerorpc_ping()
            _bombs(peer, raws[0], outstanding, bombs, bomb_size, report)
            caller = gevent.spawn(_client_loop, client, stats, rnd)
            base = peer.status()
            stall_probe = zrpc.Client(peer.endpoint, timeout=30)
            stall_probe.stall()
            ids = itertools.count()
            used: Set[Any] = set()
            sent = [0, 0]  # frames, replies expected
            start = time.monotonic()
            stop_at = start + seconds if seconds else None
            n_cases = max(1, frames // batch)

            @settings(max_examples=n_cases, database=None, deadline=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(fz.cases())
            def drive(case: Any) -> None:
                if sent[0] >= frames or (stop_at and time.monotonic() > stop_at) or not peer.alive():
                    return
                for frame in fz.expand(case, batch, ids):
                    mid = expected_reply(frame)
                    if mid is not None and mid not in used:
                        used.add(mid)
                        outstanding[mid] = time.monotonic()
                        sent[1] += 1
                    raws[sent[0] % sockets].send(frame)
                    sent[0] += 1
                    if not sent[0] % 16:
                        gevent.sleep(0)  # let the well-behaved client and the readers run
                    if len(outstanding) > _MAX_OUTSTANDING:
                        _drain(outstanding, _MAX_OUTSTANDING // 2, 10.0)
                gevent.sleep(0)

            hypothesis_seed(seed)(drive)()
            elapsed = time.monotonic() - start
            _drain(outstanding, 0, 15.0)
            if caller is not None:
                caller.kill()
                caller = None
            gevent.sleep(0.5)
            end = peer.status() if peer.alive() else {"VmRSS": -1, "fds": -1}
            report.update(
                frames=sent[0], seconds=round(elapsed, 1), frames_per_s=round(sent[0] / elapsed),
                replies_expected=sent[1], replies_lost=len(outstanding),
                calls_ok=stats["ok"], calls_wrong=stats["wrong"], calls_lost=stats["lost"],
                rss_before=base["VmRSS"], rss_after=end["VmRSS"], rss_growth=end["VmRSS"] - base["VmRSS"],
                fds_before=base["fds"], fds_after=end["fds"],
                max_stall_s=round(stall_probe.stall(), 3) if peer.alive() else None,
            )
            stall_probe.close()
        finally:
            if caller is not None:
                caller.kill()
            client.close()
            for raw in raws:
                raw.close()
            lines = peer.log_lines()
            alive = peer.alive()
        failures = report["failures"]
        if not alive:
            failures.append("the server died")
        if report.get("replies_lost"):
            sample = list(outstanding)[:5]
            failures.append(f"{report['replies_lost']} requests with a readable id got no reply, e.g. {sample}")
        if stats["wrong"] or stats["lost"]:
            failures.append(f"well-behaved calls: {stats['wrong']} wrong, {stats['lost']} lost "
                            f"{stats.get('errors', [])[:3]}")
        if not stats["ok"]:
            failures.append("the well-behaved client made no call")
        if report.get("rss_growth", 0) > rss_slack:
            failures.append(f"server RSS grew by {report['rss_growth'] >> 20} MiB")
        if report.get("fds_after", 0) > report.get("fds_before", 0) + 2:
            failures.append(f"server fds grew from {report['fds_before']} to {report['fds_after']}")
        problems = log_problems(lines)
        report["warnings_logged"] = sum(line.startswith("WARNING ") for line in lines)
        if problems:
            failures.append(f"{len(problems)} bad log lines, e.g. {problems[:3]}")
    return report


def _drain(outstanding: Dict[Any, float], down_to: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(outstanding) > down_to and time.monotonic() < deadline:
        gevent.sleep(0.005)
