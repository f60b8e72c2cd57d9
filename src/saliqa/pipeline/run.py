"""``saliqa run`` and ``saliqa stages``: the declared stages, run in order or shown with their state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saliqa.config import RunConfig
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.rundir import RunDir
from saliqa.pipeline.runner import (
    Stage,
    StageContext,
    StageResult,
    dependencies,
    run_stages,
    stage_fingerprint,
    until,
    why_stale,
)
from saliqa.pipeline.sources import Sources
from saliqa.pipeline.stages import STAGES

STAGE_NAMES = tuple(stage.name for stage in STAGES)


def run_pipeline(
    config: RunConfig, out: str | Path, *, until: str | None = None, progress: bool = True
) -> list[StageResult]:
    """Run every stage that is not up to date in the run directory ``out``; return what each did.

    ``until`` names the last stage to run (e.g. ``"split"`` to rate and split only).
    """
    return run_stages(_until(until), config, out, progress=progress)


def _until(last: str | None) -> list[Stage]:
    return until(STAGES, last)


@dataclass
class StageState:
    """A stage of a config as it stands in a run directory."""

    stage: Stage
    state: str
    """``up to date``, ``will run`` or ``will run after <stage>``."""
    why: str = ""
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


def stage_states(config: RunConfig, out: str | Path) -> list[StageState]:
    """Each stage of ``config``: what it reads and writes, and whether it is up to date in ``out``.

    Nothing is run or written; a stage after one that will run will run too.
    """
    root = Path(out)
    run = RunDir(root) if (root / RunLayout.STAGE_RECORDS).is_dir() else None
    sources = Sources.open(config)
    states: list[StageState] = []
    done: dict[str, str] = {}
    for i, stage in enumerate(STAGES):
        after = dependencies(stage, STAGES[:i], config)
        stale = [name for name in after if name not in done]
        reads, writes = stage.reads or ("the dataset",), stage.writes(config)
        if stale:
            states.append(StageState(stage, f"will run after {stale[0]}", "", reads, writes))
            continue
        if run is None or (
            stage.name == "rate" and sources.dataset is None and not (root / RunLayout.DEMO_DATA).is_dir()
        ):
            states.append(StageState(stage, "will run", "not run here yet", reads, writes))
            continue
        ctx = StageContext(config, run, sources, {name: done[name] for name in after}, progress=False)
        ctx.settings = stage.settings(config)
        if stage.name == "rate" and sources.dataset is None:
            sources.demo(root / RunLayout.DEMO_DATA, progress=False)
        fp = stage_fingerprint(stage, ctx)
        verdict = run.check(stage.name, fp)
        if verdict.up_to_date:
            done[stage.name] = fp
            states.append(StageState(stage, "up to date", "", reads, writes))
        else:
            why = why_stale(verdict, run.record(stage.name), ctx.settings)
            states.append(StageState(stage, "will run", why, reads, writes))
    return states


def stages_markdown() -> str:
    """The stages as a Markdown table (the README's), from their declarations: for the default config with
    robustness scores asked for, one corruption's figure standing for all."""
    config = RunConfig().model_copy(
        update={"evaluate": RunConfig().evaluate.model_copy(update={"alexnet_reference": True})}
    )
    lines = ["| stage | what it makes | reads | writes |", "| --- | --- | --- | --- |"]
    for stage in STAGES:
        names = list(stage.writes(config))
        for figure in (RunLayout.eval_curves, RunLayout.explain_curves):
            per_corruption = {figure(c) for c in config.evaluate.corruptions}
            if per_corruption & set(names):
                names = [n for n in names if n not in per_corruption] + [figure("<corruption>")]
        reads = ", ".join(f"`{n}`" for n in stage.reads) or "the dataset"
        writes = ", ".join(f"`{n}`" if "." in n else f"`{n}/`" for n in names)
        lines.append(f"| {stage.name} | {stage.does} | {reads} | {writes} |")
    return "\n".join(lines) + "\n"
