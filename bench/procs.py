"""Process plumbing shared by the orchestrator and its children: /proc readers, limits, cleanup.

Everything here is plain Python with no gevent, so the orchestrator (which
never runs an event loop) and the gevent children can both use it. Linux
only: CPU time and memory are read from /proc, never from psutil.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
from typing import Dict, List, Optional

__all__ = [
    "cpu_seconds",
    "rss_kib",
    "hwm_kib",
    "raise_nofile",
    "die_with_parent",
    "Children",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def cpu_seconds(pid: int, thread: Optional[int] = None) -> float:
    """User + system CPU time of process ``pid`` (all its threads), in seconds (10 ms steps).

    With ``thread``, only that thread's (``thread=pid`` is the main thread, where
    Python and gevent run; libzmq's I/O thread is another one).
    """
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path, "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields we want follow its ")".
    fields = stat[stat.rindex(b")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def _status(pid: int) -> Dict[str, int]:
    out: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm"):
                key, _, value = line.partition(":")
                out[key] = int(value.split()[0])
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` now, in KiB (VmRSS)."""
    return _status(pid)["VmRSS"]


def hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` over its life, in KiB (VmHWM)."""
    return _status(pid)["VmHWM"]


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (1,000 sockets need ~2,000 fds); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no child outlives the bench.

    The orchestrator passes its pid in BENCH_PARENT; if it is already gone
    (it died before we got here), exit at once.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    parent = os.environ.get("BENCH_PARENT")
    if parent and os.getppid() != int(parent):
        os._exit(3)


class Children:
    """Every child process the orchestrator started, so that all of them die on any exit path."""

    def __init__(self) -> None:
        self._procs: List[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._procs.append(proc)
        return proc

    def kill(self, proc: Optional[subprocess.Popen]) -> None:
        """Kill one child (by its pid, through its Popen) and reap it."""
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if proc in self._procs:
            self._procs.remove(proc)

    def kill_all(self) -> None:
        for proc in list(self._procs):
            self.kill(proc)
