"""`python -m bench --quick` runs end to end and prints a complete table (no timing is asserted)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("zrpc", "zerorpc", "baseline")
# The asyncio side (issue 14): zrpc.aio and its asyncio baseline, in the same run and table.
AIO = ("aio", "aio-baseline")
# Table rows start with these workload names (see bench.runner.rows_for).
WORKLOAD_ROWS = ("seq", "conc", "sleep", "big", "stream", "batch", "idle")
# Cases every framework must have produced a result for (streams: not the baseline).
CASES = {
    "seq": FRAMEWORKS + AIO, "seq-hb0": ("zrpc", "zerorpc"), "conc": FRAMEWORKS + AIO,
    "sleep-1000": FRAMEWORKS + AIO,
    "big-1MiB": FRAMEWORKS, "stream-fast": ("zrpc", "zerorpc"), "stream-slow": ("zrpc", "zerorpc"),
    "batch": FRAMEWORKS, "idle": FRAMEWORKS, "seq-curve": ("zrpc",), "conc-curve": ("zrpc",),
    "seq-metrics": ("zrpc",), "conc-metrics": ("zrpc",),
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return proc.stdout, json.load(f)


@pytest.mark.timeout(300)
def test_table_has_every_framework_and_ratio_column(quick_run):
    stdout, _ = quick_run
    header = next(line for line in stdout.splitlines() if line.startswith("| workload"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    for name in (*FRAMEWORKS, *AIO, "zrpc/zerorpc", "zrpc/baseline", "aio/aio-baseline", "aio/zrpc"):
        assert name in columns, header


@pytest.mark.timeout(300)
def test_table_has_a_row_per_workload(quick_run):
    stdout, _ = quick_run
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| workload")]
    for workload in WORKLOAD_ROWS:
        assert any(r[2:].startswith(workload) for r in rows), f"no row for {workload}:\n{stdout}"


@pytest.mark.timeout(300)
def test_every_framework_measured_every_case(quick_run):
    _, data = quick_run
    assert not data["failures"], data["failures"]
    measured = {(r["case"], r["framework"]) for r in data["runs"] if r["result"] is not None}
    for case, frameworks in CASES.items():
        for fw in frameworks:
            assert (case, fw) in measured, f"{fw} has no result for {case}"
    seq = next(e for e in data["table"] if e["key"] == "seq.calls_per_s")
    for fw in FRAMEWORKS:
        assert seq[fw] and seq[fw] > 0
    assert seq["zrpc/zerorpc"] and seq["zrpc/baseline"]
    for fw in AIO:
        assert seq[fw] and seq[fw] > 0
    conc = next(e for e in data["table"] if e["key"] == "conc.calls_per_s")
    assert seq["aio/aio-baseline"] and conc["aio/aio-baseline"] and conc["aio/zrpc"]


@pytest.mark.timeout(300)
def test_targets_are_reported(quick_run):
    stdout, data = quick_run
    assert "Targets" in stdout
    statuses = {t["status"] for t in data["targets"]}
    assert statuses <= {"PASS", "MISS", "n/a"}
    assert statuses & {"PASS", "MISS"}
    aio = [t for t in data["targets"] if t["target"].startswith("aio ")]
    assert len(aio) == 3 and all(t["status"] in ("PASS", "MISS") for t in aio), aio


def run_bench(module: str, *args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    """``python -m bench.MODULE ARGS`` from the repo; fails the test unless it exits 0."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_metrics_ab_runs_and_prints_a_ratio():
    proc = run_bench("metrics_ab", "--rounds", "2", "--window", "0.1", timeout=120)
    assert "median ratio on/off: " in proc.stdout


@pytest.mark.timeout(120)
def test_balance_bench_runs_both_policies_on_the_same_servers():
    proc = run_bench("balance", "--runs", "1", "--duration", "0.3", "--callers", "8")
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"least-in-flight", "round-robin", "least-in-flight / round-robin"} <= set(rows), proc.stdout

    def slow_share(row: str) -> float:
        return float(row.split("|")[3].strip().rstrip("%"))

    # round robin gives each of the three servers a third of the calls, whatever its speed; the
    # calls cut off by the end of the window make the completed share a little under a third
    assert 30.0 <= slow_share(rows["round-robin"]) <= 36.7, rows["round-robin"]
    # least in flight sends the slow server far less than its third
    assert slow_share(rows["least-in-flight"]) < 20.0, rows["least-in-flight"]


@pytest.mark.timeout(120)
def test_scale_bench_runs_every_setup_and_prints_its_ratios():
    proc = run_bench("scale", "--runs", "1", "--duration", "0.3", "--only", "cpu,seq")
    rows = {" ".join(line.split()[:2]): line.split() for line in proc.stdout.splitlines() if line.startswith("cpu ")}
    # one column per setup, each with a rate: the ceiling (two servers, no router) measured beside --workers 2
    assert len(rows["cpu calls/s"]) == 2 + 4 and "-" not in rows["cpu calls/s"], proc.stdout
    for ratio in ("--workers 2 ÷ one process", "ceiling: 2 servers, no router ÷ one", "--workers 2 ÷ the ceiling"):
        assert ratio in proc.stdout, proc.stdout
    assert "seq   router hop: router+1 ÷ single" in proc.stdout, proc.stdout
