"""The Ray engine: a per-image stage's shards as one Ray Data pipeline, on this machine or a cluster.

Records flow through two ``map_batches`` steps: the work's CPU half (decode, distort) as Ray tasks, then its
model half in a pool of actors, each building the models once from the work's picklable recipe (on a GPU when
the stage's device is CUDA). Items travel pickled, so a result is the very object the local loop would have
made; the driver collects them per shard and commits each shard as the local loop does, the moment its last
item arrives. Ray's optimiser may fuse the CPU step into the actors when both ask for the same resources (a
CPU-only pool): decoding then runs inside the actors, which saves a copy of every crop.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from saliqa.config import EngineConfig
from saliqa.errors import ConfigError
from saliqa.pipeline.engines import check_engine
from saliqa.pipeline.shards import FinishedShards, PerImageWork, WorkRecipe, judged


def _pack(shards: Sequence[int], items: Sequence[Any]) -> dict[str, np.ndarray]:
    payload = np.empty(len(items), dtype=object)
    payload[:] = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
    return {"shard": np.asarray(shards, dtype=np.int64), "item": payload}


def _prepare(batch: dict[str, np.ndarray], recipe: WorkRecipe) -> dict[str, np.ndarray]:
    """The CPU half, one Ray task per batch of groups: ``(position, record)`` lists in, prepared items out."""
    groups = [[recipe.prepare(*numbered) for numbered in pickle.loads(payload)] for payload in batch["item"]]
    return _pack(batch["shard"], groups)


class _Judge:
    """An actor that holds the work's models, built once from the recipe, and judges one group at a time."""

    def __init__(self, recipe: WorkRecipe) -> None:
        self.recipe, self.work = recipe, recipe.build()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        groups = []
        for payload in batch["item"]:
            items = [self.recipe.ready(item, self.work) for item in pickle.loads(payload)]
            groups.append(list(judged(self.work, items, lambda _: None)))
        return _pack(batch["shard"], groups)


def _groups(numbered: list[tuple[int, dict[str, Any]]], size: int) -> list[list[tuple[int, dict[str, Any]]]]:
    """A shard's records cut into the local loop's judge groups (:func:`~saliqa.pipeline.shards.judge_group`):
    one Ray row each, so every batch holds exactly the images it holds on the local engine."""
    return [numbered[start : start + size] for start in range(0, len(numbered), size)]


def connect(engine: EngineConfig) -> None:
    """Join the configured Ray cluster (or start Ray here) unless this process is connected already."""
    check_engine(engine)
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(
            address=engine.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING"
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # saliqa shows its own progress, in items
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def ray_shards(
    work: PerImageWork,
    recipe: WorkRecipe | None,
    pieces: Sequence[Sequence[dict[str, Any]]],
    todo: list[int],
    engine: EngineConfig,
    advance: Callable[[int], None],
) -> FinishedShards:
    """The shards ``todo`` of ``pieces`` run on Ray Data; each is yielded as soon as its last item is judged."""
    if recipe is None:
        raise ConfigError(
            f"{work.label} cannot run on Ray: it has no picklable recipe; use engine.kind = 'local'"
        )
    connect(engine)
    import ray.data

    rows = [
        {"shard": index, "item": pickle.dumps(group)}
        for index in todo
        for group in _groups(list(enumerate(pieces[index])), work.batch_images)
    ]
    actor: dict[str, Any] = {"num_cpus": engine.cpus_per_model_worker}
    if recipe.device.startswith("cuda"):
        actor["num_gpus"] = engine.gpus_per_model_worker
    per_task = max(1, engine.prepare_batch // work.batch_images)  # groups of images per CPU task
    data = (
        ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_task)))
        .map_batches(
            _prepare,
            fn_kwargs={"recipe": recipe},
            batch_size=per_task,
            batch_format="numpy",
            num_cpus=1,
        )
        .map_batches(
            _Judge,
            fn_constructor_kwargs={"recipe": recipe},
            batch_size=1,  # one group: one batch, as on the local engine
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=engine.model_workers),
            **actor,
        )
    )
    waiting: dict[int, list[Any]] = {index: [] for index in todo}
    for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, payload in zip(batch["shard"], batch["item"], strict=True):
            index, items = int(shard), pickle.loads(payload)
            waiting[index].extend(items)
            advance(work.units * len(items))
            if len(waiting[index]) == len(pieces[index]):
                yield index, waiting.pop(index)
    if waiting:  # an engine that lost items must not let a shard be committed short
        raise RuntimeError(
            f"Ray returned too few items for shard(s) {sorted(waiting)}; run again to redo them"
        )
