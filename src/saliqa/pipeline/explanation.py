"""Explain's per-image work: the crops evaluate judged, their attribution and quality maps on one grid.

Each sampled image is decoded and distorted exactly as evaluate did it (the same :class:`CropFeed`, so the
maps belong to the very pixels that were judged). Per crop: the classifier's maps for each method, to one
target per image (its clean-crop prediction, or its label); the quality model's patch map; the judge's own
Grad-CAM when it has gradients; and the crop's Sobel edges, all area-pooled onto the comparison grid.
Maps go to the chunked map store, one shard per shard of images, before the shard's index part commits it,
so a killed stage resumes with nothing lost.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saliqa.classify.models import Classifier
from saliqa.explain.attribution import attribute, degenerate, method_options
from saliqa.explain.baselines import sobel_magnitude
from saliqa.explain.similarity import grid_edges, overlap_resample
from saliqa.iqa.base import PatchGrid, QualityModel
from saliqa.loading import to_unit_float
from saliqa.pipeline.crops import Prepared, image_crops, prepare_record
from saliqa.pipeline.evaluation import CropFeed, ready_on_device
from saliqa.pipeline.layout import RunLayout
from saliqa.pipeline.mapstore import MapStore, write_map_shard
from saliqa.pipeline.models import ClassifierSpec, QualitySpec
from saliqa.pipeline.plan import CropPlan, Runtime
from saliqa.pipeline.shards import Shards, run_shards
from saliqa.pipeline.tables import MAPS_INDEX
from saliqa.report.explain_figures import Panel
from saliqa.seeding import derive_seed

QUALITY, QUALITY_NATIVE, QUALITY_GRADCAM, SOBEL = "quality", "quality_native", "quality_gradcam", "sobel"


@dataclass(frozen=True)
class ExplainSettings:
    """What explain computes for each crop (every field can change a number)."""

    methods: tuple[str, ...]
    target: str
    grid: int
    options: dict[str, dict[str, Any]]
    seed: int
    batch_size: int


def map_key(eval_set: str, image_id: str, corruption: str, severity: int, kind: str) -> str:
    """The map store's key of one map: unambiguous whatever an image id holds."""
    return json.dumps([eval_set, image_id, corruption, int(severity), kind])


def comparison_grid(native: PatchGrid, side: int) -> PatchGrid:
    """``side`` x ``side`` equal cells over the crop, or the quality map's own grid when that is coarser."""
    rows, cols = native.shape
    if rows < side or cols < side:
        return native
    r, c = grid_edges(native.height, native.width, side, side)
    return PatchGrid(r, c)


def _pool(maps: torch.Tensor, grid: PatchGrid) -> np.ndarray:
    """Pixel maps ``(N, H, W)`` area-pooled onto ``grid``; degenerate maps become NaN (no comparison)."""
    h, w = maps.shape[-2:]
    pooled = overlap_resample(
        maps.double(), np.arange(h + 1.0), np.arange(w + 1.0), grid.row_edges, grid.col_edges
    )
    pooled[degenerate(maps)] = float("nan")
    return pooled.float().cpu().numpy()


class CropMaps:
    """Every map of a batch of images' crops (all conditions of each image, in the plan's order), pooled onto
    the comparison grid: what explain stores, whether it runs over a dataset or one file."""

    def __init__(
        self,
        classifier: Classifier,
        classes: list[str],
        quality: QualityModel,
        plan: CropPlan,
        settings: ExplainSettings,
    ) -> None:
        self.classifier, self.classes, self.quality = classifier, classes, quality
        self.plan, self.settings = plan, settings
        self.index = {c: i for i, c in enumerate(classes)}
        self.device = next(classifier.parameters()).device
        self.judge_net = quality.attribution_model()
        self.units = len(plan.conditions)

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.settings.batch_size):
            yield slice(start, min(start + self.settings.batch_size, n))

    def _targets(self, records: list[dict[str, Any]], x: torch.Tensor) -> torch.Tensor:
        n = self.units
        if self.settings.target == "label":
            labels = [self.index[r["label"]] for r in records]
        else:
            with torch.no_grad():
                labels = self.classifier(x[::n]).argmax(dim=1).tolist()
        return torch.tensor(labels, device=self.device).repeat_interleave(n)

    def _seeds(self, records: list[dict[str, Any]], method: str) -> list[int]:
        return [
            derive_seed(self.settings.seed, "explain", method, r["set"], r["image_id"], c, s)
            for r in records
            for c, s in self.plan.conditions
        ]

    def _attribute(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        targets: torch.Tensor | None,
        method: str,
        seeds: list[int],
    ) -> torch.Tensor:
        options = dict(self.settings.options.get(method, {}))
        parts = []
        for part in self._chunks(len(x)):
            if "seeds" in method_options(method):
                options["seeds"] = seeds[part]
            parts.append(
                attribute(model, x[part], None if targets is None else targets[part], method, **options)
            )
        return torch.cat(parts)

    def __call__(self, records: list[dict[str, Any]], crops: torch.Tensor) -> list[dict[str, Any]]:
        """Per record: its maps ``{kind: (conditions, rows, cols)}``, grids, predictions, target, quality."""
        n = self.units
        x = to_unit_float(crops, self.device)
        with torch.no_grad():
            preds = torch.cat([self.classifier(x[p]).argmax(dim=1) for p in self._chunks(len(x))])
        rated = [self.quality(x[p].to(self.quality.device)) for p in self._chunks(len(x))]
        native = rated[0].grid
        grid = comparison_grid(native, self.settings.grid)
        patch = torch.cat([r.patch_map.float().cpu() for r in rated])
        maps: dict[str, np.ndarray] = {
            QUALITY_NATIVE: patch.numpy(),
            QUALITY: overlap_resample(
                patch.double(), native.row_edges, native.col_edges, grid.row_edges, grid.col_edges
            )
            .float()
            .numpy(),
            SOBEL: _pool(sobel_magnitude(x), grid),
        }
        targets = self._targets(records, x)
        flags: dict[str, np.ndarray] = {}
        for method in self.settings.methods:
            full = self._attribute(self.classifier, x, targets, method, self._seeds(records, method))
            flags[method] = degenerate(full).cpu().numpy()
            maps[method] = _pool(full, grid)
        if self.judge_net is not None:
            judge_x = x.to(self.quality.device)
            maps[QUALITY_GRADCAM] = _pool(self._attribute(self.judge_net, judge_x, None, "gradcam", []), grid)
        quality = torch.cat([r.quality.double().cpu() for r in rated]).numpy()
        results = []
        for j in range(len(records)):
            rows = slice(j * n, (j + 1) * n)
            results.append(
                {
                    "maps": {kind: m[rows] for kind, m in maps.items()},
                    "grids": {QUALITY_NATIVE: native},
                    "grid": grid,
                    "pred": preds[rows].cpu().numpy(),
                    "target": int(targets[j * n]),
                    "quality": quality[rows],
                    "degenerate": {m: f[rows] for m, f in flags.items()},
                }
            )
        return results


@dataclass(frozen=True)
class ExplainRecipe:
    """Explain's picklable halves (:class:`~saliqa.pipeline.shards.WorkRecipe`): decode and distort as evaluate
    did; every map of the crops."""

    classifier: ClassifierSpec
    quality: QualitySpec
    plan: CropPlan
    settings: ExplainSettings

    @property
    def device(self) -> str:
        return self.classifier.device

    def prepare(self, position: int, record: dict[str, Any]) -> Prepared:
        return prepare_record(position, record, self.plan)

    def build(self) -> ExplainWork:
        classifier, state = self.classifier.build()
        maker = CropMaps(classifier, list(state["classes"]), self.quality.build(), self.plan, self.settings)
        return ExplainWork(maker, Runtime(workers=0), [], None)

    def ready(self, item: Prepared, work: ExplainWork) -> Prepared:
        return ready_on_device(item, self.plan, work.device)


class ExplainWork:
    """The per-image work of explain over ``records`` (sampled, in order), for the shard loop."""

    label = "explain"
    key = ("set", "image_id")
    failure = "attribution failed"

    def __init__(
        self, maker: CropMaps, runtime: Runtime, records: Sequence[dict[str, Any]], maps_dir: Path | None
    ) -> None:
        self.maker, self.plan = maker, maker.plan
        self.units = maker.units
        self.device = maker.device
        self.batch_images = max(1, maker.settings.batch_size // self.units)
        self.feed = CropFeed(maker.plan, runtime, records, self.batch_images, self.device, len(records))
        self.maps_dir = maps_dir

    def prepare(self, start: int, records: Sequence[dict[str, Any]]) -> Iterator[Prepared]:
        yield from self.feed.prepare(start, list(range(start, start + len(records))))

    def batch_key(self, item: Prepared) -> Hashable:
        return None

    def judge(self, items: list[Prepared]) -> None:
        results = self.maker([item.record for item in items], torch.cat([item.crops for item in items]))
        for item, result in zip(items, results, strict=True):
            item.result, item.crops = result, None

    def rows(self, item: Prepared) -> list[dict[str, Any]]:
        record, out = item.record, item.result
        rows = []
        for k, (corruption, severity) in enumerate(self.plan.conditions):
            values: dict[str, Any] = {"quality": float("nan")}
            if item.status == "ok":
                values = {
                    "target": self.maker.classes[out["target"]],
                    "pred": self.maker.classes[int(out["pred"][k])],
                    "quality": float(out["quality"][k]),
                    "grid": "x".join(map(str, out["grid"].shape)),
                    "degenerate": ",".join(m for m, f in out["degenerate"].items() if f[k]) or None,
                }
            rows.append(
                MAPS_INDEX.row(
                    set=record["set"],
                    image_id=record["image_id"],
                    label=record["label"],
                    corruption=corruption,
                    severity=severity,
                    status=item.status,
                    reason=item.reason,
                    **values,
                )
            )
        return rows

    def before_commit(self, index: int, items: list[Prepared]) -> None:
        keys, arrays, grids = [], [], []
        for item in items:
            if item.status != "ok":
                continue
            r = item.record
            for kind, maps in item.result["maps"].items():
                grid = item.result["grids"].get(kind, item.result["grid"])
                for k, (corruption, severity) in enumerate(self.plan.conditions):
                    keys.append(map_key(r["set"], r["image_id"], corruption, severity, kind))
                    arrays.append(maps[k])
                    grids.append(grid)
        write_map_shard(self.maps_dir / f"part-{index:05d}.npz", keys, arrays, grids)

    def close(self) -> None:
        self.feed.close()


def explain_to_dir(
    records: pd.DataFrame,
    work: ExplainWork,
    runtime: Runtime,
    out: RunLayout,
    meta: dict[str, Any],
    recipe: ExplainRecipe | None = None,
) -> int:
    """Maps of ``records`` into ``maps/`` with their index, resuming finished shards; returns how many were
    reused. ``meta['fingerprint']`` names the work: maps and parts of other work are thrown away. ``recipe``
    lets the Ray engine build the work's models."""
    shards = Shards(
        out.path(RunLayout.EXPLAIN_PARTS),
        f"{meta['fingerprint']} shard_size={runtime.shard_size} device={work.device.type}",
        clear_with=[out.path(RunLayout.MAPS)],
    )
    out.path(RunLayout.MAPS).mkdir(parents=True, exist_ok=True)
    done = run_shards(
        work,
        records.to_dict("records"),
        shards,
        schema=MAPS_INDEX,
        runtime=runtime,
        recipe=recipe,
    )
    MAPS_INDEX.write_parts(out.path(RunLayout.MAPS_INDEX), done.parts, meta)
    return done.reused


def load_maps(layout: RunLayout, index: pd.DataFrame, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """The maps of each kind for the rows of ``index`` (in its order), stacked ``(rows, g, g)``; a kind the
    store lacks is left out."""
    store = {key: m for key, m, _ in MapStore(layout.path(RunLayout.MAPS))}
    out = {}
    for kind in kinds:
        keys = [
            map_key(s, i, c, v, kind)
            for s, i, c, v in index[["set", "image_id", "corruption", "severity"]].itertuples(index=False)
        ]
        if keys and all(k in store for k in keys):
            out[kind] = np.stack([store[k] for k in keys]).astype(np.float64)
    return out


def make_panel(
    classifier: Classifier,
    classes: list[str],
    quality: QualityModel,
    record: dict[str, Any],
    plan: CropPlan,
    condition: tuple[str, int],
    method: str,
    settings: ExplainSettings,
) -> Panel:
    """The study's panel for one image (``record``: image_id, path, label, set) under ``condition``, its map
    made as the stage makes it (same target rule, same seeds)."""
    pair = replace(plan, conditions=(plan.conditions[0], condition), distort_on="workers")
    device = next(classifier.parameters()).device
    x = to_unit_float(image_crops(record["path"], pair, record["image_id"]).crops, device)
    with torch.no_grad():
        predicted = classifier(x).argmax(dim=1).tolist()
    rated = quality(x.to(quality.device))
    label = record.get("label")
    if settings.target == "label" and label in classes:
        target = classes.index(label)
    else:
        target = predicted[0]
    options = dict(settings.options.get(method, {}))
    if "seeds" in method_options(method):
        s = record.get("set", "val")
        options["seeds"] = [derive_seed(settings.seed, "explain", method, s, record["image_id"], *condition)]
    attribution = attribute(classifier, x[1:], [target], method, **options)[0]
    crops = (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    name, severity = condition
    return Panel(
        clean=crops[0],
        distorted=crops[1],
        quality_map=rated.patch_map[1].float().cpu().numpy(),
        row_edges=rated.grid.row_edges,
        col_edges=rated.grid.col_edges,
        attribution=attribution.cpu().numpy(),
        image_id=str(record["image_id"]),
        condition="clean" if name == "none" else f"{name} {severity}",
        method=method,
        label=str(label) if label is not None else "?",
        target=classes[target],
        prediction=classes[predicted[1]],
        clean_quality=float(rated.quality[0]),
        quality=float(rated.quality[1]),
        judge=quality.name.upper(),
    )


def explanation_maps(
    classifier: Classifier,
    classes: list[str],
    quality: QualityModel,
    record: dict[str, Any],
    plan: CropPlan,
    settings: ExplainSettings,
) -> dict[str, Any]:
    """The maps of one file's crops under ``plan``'s conditions, as the stage stores them (``record``: path,
    image_id, label, set)."""
    crops = image_crops(record["path"], plan, record["image_id"]).crops
    result = CropMaps(classifier, classes, quality, plan, settings)([record], crops)[0]
    return {**result["maps"], "grid": "x".join(map(str, result["grid"].shape))}
