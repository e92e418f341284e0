"""Processes for the fuzz suite: start peers, read their health from /proc. No pytest here."""
from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from gevent import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "tests", "peers")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def free_endpoint() -> str:
    """A tcp endpoint on 127.0.0.1 whose port was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def spawn(script: str, *args: str, ready: str = "READY", timeout: float = 30.0) -> subprocess.Popen:
    """Run tests/peers/SCRIPT in its own Python process; return once it printed ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(PEERS, script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    wait_line(proc, ready, timeout)
    return proc


def wait_line(proc: subprocess.Popen, expected: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    line = "?"
    while time.monotonic() < deadline and line:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line.strip() == expected:
            return
    stop(proc)
    raise RuntimeError(f"peer did not print {expected!r} (last line {line!r}): {proc.stderr.read()}")


def stop(proc: subprocess.Popen) -> None:
    """Kill ``proc`` (continuing it first if it was stopped) and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        except ProcessLookupError:
            pass
    proc.communicate(timeout=10)


class ServerPeer:
    """tests/peers/hostile_server.py in its own process, with its log file and /proc readings."""

    def __init__(self, heartbeat: float = 5.0, max_size: Optional[int] = None,
                 pool_size: Optional[int] = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="zrpc-fuzz-")
        self.logfile = os.path.join(self._tmp.name, "server.log")
        self.endpoint = free_endpoint()
        args = [self.endpoint, self.logfile, "--heartbeat", str(heartbeat)]
        if max_size:
            args += ["--max-size", str(max_size)]
        if pool_size:
            args += ["--pool-size", str(pool_size)]
        self.proc = spawn("hostile_server.py", *args)
        self.pid = self.proc.pid

    def status(self) -> Dict[str, int]:
        """VmRSS and VmHWM (peak) in bytes, and the number of open fds."""
        fields: Dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) * 1024
        fields["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        return fields

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / _TICK

    def log_lines(self) -> List[str]:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        stop(self.proc)
        self._tmp.cleanup()

    def __enter__(self) -> "ServerPeer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


LEVELS = ("DEBUG ", "INFO ", "WARNING ", "ERROR ", "CRITICAL ")


def log_problems(lines: List[str]) -> List[str]:
    """Lines that show a bug: the transport's catch-all, a traceback, or a line that is not one record."""
    bad = []
    for line in lines:
        if not line.startswith(LEVELS) or not line.split(" ", 2)[1].startswith("zrpc"):
            bad.append(f"not a record of its own (forged or multi-line): {line[:200]!r}")
        elif "error while handling an incoming message" in line or "Traceback" in line:
            bad.append(f"reached a catch-all: {line[:200]!r}")
        elif line.startswith(("ERROR ", "CRITICAL ")):
            bad.append(f"logged at error level: {line[:200]!r}")
    return bad
