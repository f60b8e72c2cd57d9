"""The stage contract and the one runner that owns everything a stage does besides its work.

A :class:`Stage` declares its name, what it reads and writes, the config settings and other inputs its
fingerprint covers, and a body that does the work. The runner computes the fingerprint (its settings, its
inputs and the fingerprints of the stages whose artifacts it reads), skips the stage when its record shows the
same fingerprint and every file it made is unchanged, and otherwise invalidates the record, runs the body,
times it, and records its files, provenance and messages; then it removes the stage's scratch folders.
``--until``, the CLI's stage choices, ``saliqa stages`` and the README's table all follow from
:data:`saliqa.pipeline.stages.STAGES`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saliqa.config import RunConfig, dump_config
from saliqa.errors import ConfigError
from saliqa.io.atomic import write_json, write_text
from saliqa.io.hashing import fingerprint
from saliqa.io.provenance import provenance, versions
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.rundir import RunDir, Verdict
from saliqa.pipeline.shards import discard_parts
from saliqa.pipeline.sources import Sources

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    """What a stage's body says about its work: lines for the user and fields for its record."""

    messages: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """Everything a stage's body may use: the config, the run directory, the sources and its identity."""

    config: RunConfig
    run: RunDir
    sources: Sources
    upstream: dict[str, str]
    """Fingerprints of the stages whose artifacts this one reads."""
    progress: bool = True
    fingerprint: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    _made: dict[str, Any] = field(default_factory=dict, repr=False)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for in this stage, the same object after (a model built
        to fingerprint the stage is the one its body runs)."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    @property
    def layout(self) -> RunLayout:
        return self.run.layout

    def path(self, name: str) -> Path:
        return self.run.path(name)

    def meta(self, stage: str, **extra: Any) -> dict[str, Any]:
        """Provenance of the stage's artifacts: stage, fingerprint, settings, versions, time and ``extra``."""
        return provenance(stage, self.fingerprint, self.settings, **self.upstream, **extra)


def _nothing(_: Any) -> dict[str, Any]:
    return {}


def _no_check(_: RunConfig) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, declared."""

    name: str
    does: str
    """One line: what the stage makes, for ``saliqa stages`` and the README."""
    version: int
    """Bumped when the stage's code changes its output, so old artifacts are not reused."""
    reads: tuple[str, ...]
    """Artifacts of earlier stages it reads (run-directory names); the stages that write them come first."""
    writes: Callable[[RunConfig], tuple[str, ...]]
    """Artifacts it writes (files or folders), for a config."""
    settings: Callable[[RunConfig], dict[str, Any]]
    """The config settings its fingerprint covers (settings that change no number are left out)."""
    body: Callable[[StageContext], StageReport]
    inputs: Callable[[StageContext], dict[str, Any]] = _nothing
    """Whatever else its results depend on: a dataset's listing, a model's identity, a file's hash."""
    check: Callable[[RunConfig], None] = _no_check
    """Fail on a config this stage cannot run, before any work."""
    scratch: tuple[str, ...] = ()
    """Folders of parts, removed once the stage is recorded as done."""


@dataclass
class StageResult:
    """What the runner did with one stage."""

    name: str
    ran: bool
    fingerprint: str
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)


def stage_names(stages: Sequence[Stage]) -> tuple[str, ...]:
    return tuple(stage.name for stage in stages)


def until(stages: Sequence[Stage], last: str | None) -> list[Stage]:
    """The stages up to and including ``last`` (all when None)."""
    names = stage_names(stages)
    if last is None:
        return list(stages)
    if last not in names:
        raise ConfigError(f"unknown stage {last!r}; choose one of {', '.join(names)}")
    return list(stages[: names.index(last) + 1])


def dependencies(stage: Stage, earlier: Sequence[Stage], config: RunConfig) -> list[str]:
    """The earlier stages that write what ``stage`` reads."""
    return [s.name for s in earlier if set(s.writes(config)) & set(stage.reads)]


def stage_fingerprint(stage: Stage, ctx: StageContext) -> str:
    return fingerprint(stage.name, stage.version, ctx.upstream, ctx.settings, stage.inputs(ctx))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
    return out


def why_stale(verdict: Verdict, record: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    """Why a stage is not up to date: never run, the settings that changed, its inputs, or the file that did."""
    if record is None or verdict.why != "its settings or inputs changed":
        return verdict.why
    before, now = _flat(record.get("settings", {})), _flat(settings)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return f"changed settings: {', '.join(changed)}" if changed else "its inputs changed"


def run_stage(stage: Stage, ctx: StageContext) -> StageResult:
    """Skip ``stage`` when it is up to date in the run directory, else run it and record what it made."""
    run, config = ctx.run, ctx.config
    ctx.settings = stage.settings(config)
    ctx.fingerprint = stage_fingerprint(stage, ctx)
    record = run.record(stage.name)
    verdict = run.check(stage.name, ctx.fingerprint)
    if verdict.up_to_date:
        return StageResult(stage.name, False, ctx.fingerprint)
    run.invalidate(stage.name)  # its outputs are about to change: never leave them marked done meanwhile
    start = time.perf_counter()
    report = stage.body(ctx)
    seconds = time.perf_counter() - start
    messages = list(report.messages)
    if record is not None:
        messages.insert(0, f"ran again: {why_stale(verdict, record, ctx.settings)}")
    outputs = RunLayout.with_twins(stage.writes(config))
    run.mark_done(
        stage.name,
        ctx.fingerprint,
        outputs,
        seconds=seconds,
        settings=ctx.settings,
        upstream=ctx.upstream,
        messages=messages,
        **report.info,
    )
    for folder in stage.scratch:
        discard_parts(run.path(folder))
    return StageResult(stage.name, True, ctx.fingerprint, seconds, messages)


def run_stages(
    stages: Sequence[Stage],
    config: RunConfig,
    out: str | Path,
    *,
    sources: Sources | None = None,
    progress: bool = True,
) -> list[StageResult]:
    """Run every stage of ``stages`` that is not up to date in the run directory ``out``, in order.

    ``sources`` (default: the datasets the config names) lets a caller hand over images of its own, as
    ``saliqa rate PATH... --out DIR`` does; the config's ``[data]`` then says nothing about them, so no
    ``config.toml`` is written (each table's provenance still records its settings).
    """
    for stage in stages:  # everything that can be wrong with the config fails here, before any work
        stage.check(config)
    own_sources = sources is None
    sources = Sources.open(config) if sources is None else sources
    run = RunDir(out)
    results: list[StageResult] = []
    with run.locked():
        if own_sources:
            write_text(run.path(RunLayout.CONFIG), dump_config(config))
        done: dict[str, str] = {}
        for i, stage in enumerate(stages):
            upstream = {name: done[name] for name in dependencies(stage, stages[:i], config)}
            ctx = StageContext(config, run, sources, upstream, progress)
            result = run_stage(stage, ctx)
            done[stage.name] = result.fingerprint
            results.append(result)
            log.info("%s: %s", result.name, "done" if result.ran else "up to date")
        summary = [
            {"name": r.name, "ran": r.ran, "fingerprint": r.fingerprint, "seconds": r.seconds}
            for r in results
        ]
        write_json(run.path(RunLayout.RUN_RECORD), {"versions": versions(), "stages": summary})
    return results
