"""One table of every benchmark's headline numbers, from their logs (runs nothing itself).

Reads the ``HEADLINE <bench> <metric>=<value> target=<target> ok=<yes|no>`` lines (see ``headline.py``) from
the files given, or from stdin, and prints one row per headline; a benchmark named with ``--expect`` that left
no headline (it failed, or is missing) gets a row saying so.

    python benchmarks/summary.py logs/bench_*.log --expect bench_piqe bench_evaluate
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

LINE = re.compile(
    r"^HEADLINE (?P<bench>\S+) (?P<metric>[^=\s]+)=(?P<value>\S+) target=(?P<target>\S+) ok=(?P<ok>yes|no)\s*$"
)


def parse(lines: Iterable[str]) -> list[dict[str, str]]:
    """The headline rows among ``lines``, in order."""
    return [match.groupdict() for line in lines if (match := LINE.match(line.strip()))]


def table(rows: list[dict[str, str]], expected: Iterable[str] = ()) -> str:
    """The summary table as text, with a row for each expected benchmark that left no headline."""
    seen = {row["bench"] for row in rows}
    rows = rows + [
        {"bench": name, "metric": "(no headline: failed or missing)", "value": "-", "target": "-", "ok": "no"}
        for name in expected
        if name not in seen
    ]
    header = {"bench": "benchmark", "metric": "headline", "value": "value", "target": "target", "ok": "ok"}
    widths = {key: max(len(r[key]) for r in [header, *rows]) for key in header}
    out = [" | ".join(header[k].ljust(widths[k]) for k in header)]
    out.append("-+-".join("-" * widths[k] for k in header))
    out += [" | ".join(row[k].ljust(widths[k]) for k in header) for row in rows]
    met = sum(row["ok"] == "yes" for row in rows)
    out.append(f"{met} of {len(rows)} headlines meet their target")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="*", type=Path, help="benchmark logs (default: stdin)")
    parser.add_argument("--expect", nargs="*", default=[], help="benchmarks that should have left a headline")
    args = parser.parse_args()
    lines: list[str] = []
    if args.logs:
        for log in args.logs:
            if log.is_file():
                lines += log.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    print(table(parse(lines), args.expect))


if __name__ == "__main__":
    main()
