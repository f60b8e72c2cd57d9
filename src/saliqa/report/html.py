"""The report page: one self-contained HTML file rendered by Jinja2 with autoescaping.

Everything on the page comes in as plain values (strings, numbers, data URIs of figures), and the template
escapes every one of them, so a file, class or config name can never become markup. Figures are embedded as
``data:`` URIs of images, which a browser never runs scripts from; nothing is fetched at view time.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

MAX_FIGURE_WIDTH = 1600
"""Wider figures are downsized for the page (the full-size file stays in ``figures/``)."""


@dataclass
class Table:
    """A titled table, every cell already a string."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Figure:
    title: str
    uri: str
    """A ``data:image/png;base64,...`` URI."""


@dataclass
class Section:
    """One part of the report: what its numbers mean, its tables and figures, or why it is empty."""

    key: str
    title: str
    meaning: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    missing: str | None = None
    """Set when the stage behind the section did not run: what to run."""


@dataclass
class Report:
    title: str
    run_dir: str
    created: str
    command: str
    facts: list[tuple[str, str]]
    sections: list[Section]
    config: str


def table_of(frame: pd.DataFrame, title: str, note: str = "", digits: int = 3) -> Table:
    """A DataFrame as a :class:`Table`: floats rounded to ``digits``, NaN shown as an en dash."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "–" if pd.isna(value) else f"{value:.{digits}f}"
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return "–"
        return str(value)

    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]
    return Table(title, [str(c) for c in frame.columns], rows, note)


def figure_of(path: Path, title: str) -> Figure | None:
    """A PNG file as an embedded figure, downsized to :data:`MAX_FIGURE_WIDTH`; ``None`` if it is absent."""
    if not path.is_file():
        return None
    with Image.open(path) as image:
        image.load()
        if image.width > MAX_FIGURE_WIDTH:
            height = round(image.height * MAX_FIGURE_WIDTH / image.width)
            image = image.resize((MAX_FIGURE_WIDTH, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6)
    return Figure(title, "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("saliqa.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(report: Report) -> str:
    """The page as one string of HTML."""
    return _environment().get_template("report.html.j2").render(report=report)


def markdown_tables(report: Report) -> str:
    """Every table of the report as Markdown (pipes in cells escaped), section by section."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {report.title}", ""]
    for section in report.sections:
        for table in section.tables:
            lines += [f"## {section.title}: {table.title}", ""]
            lines.append("| " + " | ".join(cell(c) for c in table.columns) + " |")
            lines.append("|" + " --- |" * len(table.columns))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
    return "\n".join(lines)
