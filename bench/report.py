"""Turn per-run measurements into one table of medians and ratios, and check the targets.

Pure functions over plain data: no processes, no sockets. A ratio is the
median of the per-run ratios (run i of zrpc against run i of the other
framework, measured seconds apart), which cancels most of the drift of a
noisy machine; the value columns are plain medians.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["FRAMEWORKS", "GEVENT_FRAMEWORKS", "AIO_FRAMEWORKS", "Row", "Target", "targets", "build_table", "format_table", "check_targets", "format_targets"]

#: The gevent frameworks: every workload runs on them.
GEVENT_FRAMEWORKS = ("zrpc", "zerorpc", "baseline")
#: zrpc.aio and a hand-written asyncio pyzmq baseline (bench.aio): seq, conc and sleep.
AIO_FRAMEWORKS = ("aio", "aio-baseline")
FRAMEWORKS = GEVENT_FRAMEWORKS + AIO_FRAMEWORKS
#: Ratio columns: (name, numerator, denominator), run by run.
RATIOS = (("zrpc/zerorpc", "zrpc", "zerorpc"), ("zrpc/baseline", "zrpc", "baseline"),
          ("aio/aio-baseline", "aio", "aio-baseline"), ("aio/zrpc", "aio", "zrpc"))
COLUMNS = ("workload", "metric", *FRAMEWORKS, *(name for name, _, _ in RATIOS))

#: (case id, framework) -> one result dict per run (None when that run failed)
Results = Dict[Tuple[str, str], List[Optional[Dict[str, Any]]]]


@dataclass(frozen=True)
class Row:
    workload: str
    metric: str
    case: str
    field: str
    fmt: str  # "rate", "us", "ms", "s", "kib", "kib_mib" (KiB shown as MiB), "mib", "count", "ratio"
    #: a second case whose same field divides this one, run by run (e.g. heartbeat on / off)
    over_case: Optional[str] = None
    frameworks: Sequence[str] = GEVENT_FRAMEWORKS
    #: how targets name this row; default "case.field"
    key: Optional[str] = None
    #: False where dividing zrpc by another framework means nothing (counts, growth near 0)
    ratios: bool = True

    @property
    def name(self) -> str:
        return self.key or f"{self.case}.{self.field}"


def _fmt(value: Optional[float], fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if fmt == "rate":
        return f"{value:,.0f}"
    if fmt in ("us", "count"):
        return f"{value:,.0f}"
    if fmt in ("ms", "s", "ratio"):
        return f"{value:,.2f}"
    if fmt == "kib":
        return f"{value:,.1f}"
    if fmt == "mib":
        return f"{value:,.1f}"
    if fmt == "kib_mib":
        return f"{value / 1024:,.1f}"
    if fmt == "yes":
        return "yes" if value else "NO"
    return str(value)


def _series(results: Results, row: Row, framework: str) -> List[Optional[float]]:
    """This row's value in each run of ``framework`` (None where a run failed or lacks the field)."""
    runs = results.get((row.case, framework), [])
    over = results.get((row.over_case, framework), []) if row.over_case else None
    out: List[Optional[float]] = []
    for i, run in enumerate(runs):
        value = None if run is None else run.get(row.field)
        if isinstance(value, bool):
            value = float(value)
        if over is not None:
            base = over[i] if i < len(over) else None
            base_value = None if base is None else base.get(row.field)
            value = value / base_value if value is not None and base_value else None
        out.append(value)
    return out


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return median(present) if present else None


def _ratio(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> Optional[float]:
    pairs = [x / y for x, y in zip(a, b) if x is not None and y]
    return median(pairs) if pairs else None


def build_table(results: Results, rows: Sequence[Row]) -> List[Dict[str, Any]]:
    """One dict per row: the median per framework and the two run-by-run ratios (None = n/a)."""
    table = []
    for row in rows:
        series = {fw: _series(results, row, fw) if fw in row.frameworks else [] for fw in FRAMEWORKS}
        entry: Dict[str, Any] = {"key": row.name, "workload": row.workload, "metric": row.metric,
                                 "fmt": row.fmt}
        for fw in FRAMEWORKS:
            entry[fw] = _median(series[fw])
            present = [v for v in series[fw] if v is not None]
            entry[f"{fw}_runs"] = len(present)
            entry[f"{fw}_max"] = max(present) if present else None
        for name, a, b in RATIOS:
            ok = row.over_case is None and row.ratios
            entry[name] = _ratio(series[a], series[b]) if ok else None
        table.append(entry)
    return table


def format_table(table: Sequence[Dict[str, Any]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [list(COLUMNS)]
    for entry in table:
        line = [entry["workload"], entry["metric"]]
        line += [_fmt(entry[fw], entry["fmt"]) for fw in FRAMEWORKS]
        line += [_fmt(entry[c], "ratio") + ("x" if entry[c] is not None else "")
                 for c, _, _ in RATIOS]
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    numeric = [False, False] + [True] * (len(COLUMNS) - 2)

    def render(line: List[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(line, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric)) + "|"
    return "\n".join([render(cells[0]), rule] + [render(c) for c in cells[1:]])


Lookup = Callable[[str, str], Optional[float]]


def _lookup(table: Sequence[Dict[str, Any]]) -> Lookup:
    index = {e["key"]: e for e in table}

    def get(key: str, column: str) -> Optional[float]:
        entry = index.get(key)
        return None if entry is None else entry.get(column)

    return get


@dataclass(frozen=True)
class Target:
    """``column`` of row ``key`` compared with ``bound`` by ``op`` ("<", "<=" or ">=")."""

    label: str
    key: str
    column: str
    op: str
    bound: float
    unit: str = "x"

    @property
    def text(self) -> str:
        return self.label

    def check(self, get: Lookup) -> Optional[bool]:
        value = get(self.key, self.column)
        if value is None:
            return None
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        return value < self.bound

    def measured(self, get: Lookup) -> str:
        value = get(self.key, self.column)
        if value is None:
            return "n/a"
        return (f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.2f}") + self.unit


def targets() -> List[Target]:
    """The goals zrpc is measured against (issues 5 and 14), in table order."""
    return [
        Target("seq: calls/s >= 2.5x zerorpc", "seq.calls_per_s", "zrpc/zerorpc", ">=", 2.5),
        Target("seq: calls/s >= 1.0x baseline", "seq.calls_per_s", "zrpc/baseline", ">=", 1.0),
        Target("seq: server CPU/call <= baseline", "seq.server_cpu_us_per_call", "zrpc/baseline", "<=", 1.0),
        Target("conc: calls/s >= 5x zerorpc", "conc.calls_per_s", "zrpc/zerorpc", ">=", 5.0),
        Target("conc: calls/s >= 1.0x baseline", "conc.calls_per_s", "zrpc/baseline", ">=", 1.0),
        Target("sleep 10,000: all done within 1.6 s", "sleep-10000.wall_s", "zrpc", "<=", 1.6, " s"),
        Target("sleep 50,000: all done within 3 s", "sleep-50000.wall_s", "zrpc", "<=", 3.0, " s"),
        Target("sleep 50,000: no failures", "sleep-50000.failures", "zrpc_max", "<=", 0, " (worst run)"),
        Target("sleep 10,000: server memory per call in flight < 5 KiB",
               "sleep-10000.kib_per_call", "zrpc", "<", 5, " KiB"),
        Target("sleep 50,000: server memory per call in flight < 5 KiB",
               "sleep-50000.kib_per_call", "zrpc", "<", 5, " KiB"),
        Target("big 1 MiB: MiB/s >= 1.0x baseline", "big-1MiB.mib_per_s", "zrpc/baseline", ">=", 1.0),
        Target("stream: >= 50,000 items/s", "stream-fast.items_per_s", "zrpc", ">=", 50_000, " items/s"),
        Target("stream slow reader: server memory flat (< 1 MiB growth)",
               "stream-slow.server_growth_kib", "zrpc", "<", 1024, " KiB"),
        Target("stream slow reader: client memory flat (< 1 MiB growth)",
               "stream-slow.client_growth_kib", "zrpc", "<", 1024, " KiB"),
        Target("heartbeats free for short calls: seq hb=5 / hb=None >= 0.9",
               "seq.heartbeat_ratio", "zrpc", ">=", 0.9),
        Target("CURVE costs at most 25%: seq calls/s CURVE / plain >= 0.75",
               "seq.curve_ratio", "zrpc", ">=", 0.75),
        Target("CURVE costs at most 25%: conc calls/s CURVE / plain >= 0.75",
               "conc.curve_ratio", "zrpc", ">=", 0.75),
        Target("metrics cost at most 10%: seq calls/s metrics / none >= 0.9",
               "seq.metrics_ratio", "zrpc", ">=", 0.9),
        Target("metrics cost at most 10%: conc calls/s metrics / none >= 0.9",
               "conc.metrics_ratio", "zrpc", ">=", 0.9),
        # issue 14: zrpc.aio
        Target("aio seq: calls/s >= 1.0x the asyncio baseline", "seq.calls_per_s", "aio/aio-baseline", ">=", 1.0),
        Target("aio conc: calls/s >= 1.0x the asyncio baseline", "conc.calls_per_s", "aio/aio-baseline",
               ">=", 1.0),
        Target("aio conc: calls/s >= 0.7x gevent zrpc", "conc.calls_per_s", "aio/zrpc", ">=", 0.7),
    ]


def check_targets(table: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    get = _lookup(table)
    out = []
    for target in targets():
        ok = target.check(get)
        out.append({"target": target.text, "measured": target.measured(get),
                    "status": "n/a" if ok is None else ("PASS" if ok else "MISS")})
    return out


def format_targets(checked: Sequence[Dict[str, Any]]) -> str:
    lines = ["Targets (zrpc):", ""]
    for c in checked:
        lines.append(f"- {c['status']:<4} {c['target']}: measured {c['measured']}")
    return "\n".join(lines)
