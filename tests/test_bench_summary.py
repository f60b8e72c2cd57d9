"""benchmarks/summary.py reads the HEADLINE lines the benchmarks print and tabulates them."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from headline import headline, interleaved
from summary import parse, table


def test_a_headline_line_round_trips_through_the_summary() -> None:
    line = headline("bench_x", "ratio", 0.8123456, ">=0.75", True)
    assert line == "HEADLINE bench_x ratio=0.8123 target=>=0.75 ok=yes"
    rows = parse(
        ["noise", line, "HEADLINE broken", "  " + headline("bench_y", "mib", 1220.0, "<1024", False)]
    )
    assert rows == [
        {"bench": "bench_x", "metric": "ratio", "value": "0.8123", "target": ">=0.75", "ok": "yes"},
        {"bench": "bench_y", "metric": "mib", "value": "1220", "target": "<1024", "ok": "no"},
    ]
    text = table(rows, expected=["bench_x", "bench_scaling"])
    assert "bench_scaling | (no headline: failed or missing)" in text
    assert text.splitlines()[-1] == "1 of 3 headlines meet their target"


def test_interleaved_takes_turns_after_a_warm_up() -> None:
    order: list[str] = []
    seconds = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b"] * 4 and all(len(v) == 3 for v in seconds.values())
