"""The one loop of every per-image stage: shards of records, batches judged together, nothing lost.

Records are cut into shards; each finished shard is one parquet part, written last as its commit mark, so a
killed stage resumes at the first unfinished shard and ends with the same table as an uninterrupted one. A
folder of parts belongs to one piece of work, named by a stamp (fingerprint, shard size, device): parts left
by other work are thrown away, so a resumed run only reuses rows computed exactly as it would compute them.

Inside a shard, prepared images are judged in batches. A batch that raises is split in halves until the
image(s) that fail are isolated: each is recorded ``failed`` with its reason and the rest are judged as
usual. One bad image never stops a stage; the same error on every image tried does (:class:`FailureGuard`),
because that is a bug, and a table of failures must not be marked done.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from saliqa.errors import StageFailed
from saliqa.io.atomic import write_text
from saliqa.io.progress import progress_bar
from saliqa.io.tables import TableSchema
from saliqa.pipeline.plan import Runtime


@dataclass
class Item:
    """One record on its way through a per-image stage."""

    position: int
    """Index of the record in its shard."""
    record: dict[str, Any]
    status: str = "ok"
    """ok, or why no judgement: missing, rejected, skipped, failed."""
    reason: str | None = None
    error: str | None = None
    """``Type: message`` of the exception behind a failure, to tell one bad image from a bug."""

    @property
    def tried(self) -> bool:
        """Whether the stage's own work ran on this image (and so could show a bug)."""
        return self.status == "ok" or self.error is not None


def unusable(record: dict[str, Any]) -> tuple[str, str] | None:
    """Why a listed record cannot be used before its file is opened, as (status, reason), or None."""
    if record.get("reason"):  # unusable since it was listed (e.g. a name that is not valid UTF-8)
        return "rejected", record["reason"]
    if not record.get("present", True):
        return "missing", "file not found"
    return None


class PerImageWork(Protocol):
    """What a per-image stage does to its images; :func:`run_shards` does the rest."""

    label: str
    """What the progress shows, e.g. ``rate (piqe)``."""
    units: int
    """Rows, and progress units, per image (evaluate: one per condition)."""
    key: tuple[str, ...]
    """The columns that identify an image in the rows (``image_id``; with ``set`` when sets share ids)."""
    batch_images: int
    """Images judged together at most."""
    failure: str
    """Start of the reason of an image the judge fails on, e.g. ``quality model failed``."""

    def prepare(self, start: int, records: Sequence[dict[str, Any]]) -> Iterable[Item]:
        """The shard's records (``start``: the first one's index in the whole stage) as items, in any order."""
        ...

    def batch_key(self, item: Item) -> Hashable:
        """Items may share a batch only when their keys are equal (e.g. images of one size)."""
        ...

    def judge(self, items: list[Item]) -> None:
        """Judge a batch in place; raise if any image of it cannot be judged."""
        ...

    def rows(self, item: Item) -> list[dict[str, Any]]:
        """The table rows of one finished item."""
        ...

    def before_commit(self, index: int, items: list[Item]) -> None:
        """Write what a shard makes besides its rows (e.g. patch maps), before its part commits it."""
        ...

    def close(self) -> None:
        """Release workers and pools."""
        ...


class Shards:
    """The parts folder of one piece of work."""

    def __init__(self, folder: Path, identity: str, clear_with: Sequence[Path] = ()) -> None:
        """Open ``folder`` for the work ``identity``; if it holds other work, empty it and ``clear_with``."""
        self.folder = folder
        stamp = folder / "WORK"
        try:
            current = stamp.read_text().strip()
        except (OSError, UnicodeDecodeError):
            current = None
        if current != identity:
            for path in (folder, *clear_with):
                shutil.rmtree(path, ignore_errors=True)
            folder.mkdir(parents=True)
            write_text(stamp, identity)

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:05d}.parquet"

    def done(
        self, index: int, schema: TableSchema, keys: list[list[object]], columns: tuple[str, ...], step: int
    ) -> bool:
        """Whether part ``index`` is finished, for ``keys`` (values of ``columns``, one per ``step`` rows).

        A part that cannot be read (damaged since) is treated as not done, and made again.
        """
        path = self.part(index)
        if not path.exists():
            return False
        try:
            frame = schema.read(path, columns=list(columns))
        except Exception:  # noqa: BLE001 - any unreadable part is simply redone
            return False
        return frame.iloc[::step].values.tolist() == keys

    def commit(self, index: int, frame: pd.DataFrame, schema: TableSchema) -> None:
        """Write part ``index``: the shard's commit mark, so it is written after everything else it made."""
        schema.write(self.part(index), frame)

    def paths(self, count: int) -> list[Path]:
        return [self.part(i) for i in range(count)]


def discard_parts(folder: Path) -> None:
    """Remove a parts folder once the merged artifact is recorded as done."""
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class FailureGuard:
    """Tells a bad image from a bug: the same error on every image a stage tried is a bug.

    It stops the stage when every image tried in a shard (two or more) failed with one error, when
    :attr:`streak` images in a row did (shards of one image), or, at the end, when every image tried did.
    """

    label: str
    streak: int = 16
    _run: int = 0
    _run_error: str | None = None
    _tried: int = 0
    _errors: set[str | None] = field(default_factory=set)
    doomed: list[int] = field(default_factory=list)
    """Parts already written whose every tried image failed with the error now running: made again."""

    def shard(self, index: int, items: Sequence[Item]) -> None:
        tried = [item for item in items if item.tried]
        errors = {item.error if item.status == "failed" else None for item in tried}
        for item in tried:
            error = item.error if item.status == "failed" else None
            self._run = (
                self._run + 1 if error is not None and error == self._run_error else int(error is not None)
            )
            self._run_error = error
        self._tried += len(tried)
        self._errors |= errors
        if len(tried) >= 2 and len(errors) == 1 and None not in errors:
            self._stop(len(tried), errors.pop())
        if self._run_error is not None and self._run >= self.streak:
            self._stop(self._run, self._run_error)
        if tried and len(errors) == 1 and None not in errors:
            self.doomed.append(index)
        elif tried:
            self.doomed.clear()

    def finish(self) -> None:
        if self._tried >= 2 and len(self._errors) == 1 and None not in self._errors:
            self._stop(self._tried, next(iter(self._errors)) or "")

    def _stop(self, count: int, error: str | None) -> None:
        raise StageFailed(
            f"{self.label}: the same error ended all {count} images it tried, so it is a bug, not a bad image: "
            f"{error}. Nothing was marked done; fix the cause and run again (finished shards are kept)"
        )


def _judge_isolating(work: PerImageWork, items: list[Item]) -> None:
    """Judge ``items``; when the batch raises, split it in halves until the failing image(s) stand alone."""
    try:
        work.judge(items)
    except Exception as error:  # noqa: BLE001 - a failure on one image must not end the stage
        if len(items) > 1:
            middle = len(items) // 2
            _judge_isolating(work, items[:middle])
            _judge_isolating(work, items[middle:])
            return
        item = items[0]
        item.error = f"{type(error).__name__}: {error}"
        item.status, item.reason = "failed", f"{work.failure}: {item.error}"


def judge_group(work: PerImageWork, item: Item) -> int:
    """The batch an item may join: ``batch_images`` consecutive positions of a shard. A batch never spans two
    groups, so its members do not depend on how items reach the judge (a loader, an engine's workers): the
    models' float results depend in their last bits on the batch they run in."""
    return item.position // work.batch_images


def judged(work: PerImageWork, prepared: Iterable[Item], advance: Callable[[int], None]) -> Iterator[Item]:
    """Every prepared item once judged (or as it came, when there is nothing to judge), batch by batch: not
    necessarily in order (see :func:`in_order`). A batch is the usable items of one :func:`judge_group` with
    equal batch keys; it is judged as soon as it is complete, not when the next item arrives, so the models
    never wait on a loader for data they do not need yet."""
    batch: list[Item] = []

    def flush() -> Iterator[Item]:
        _judge_isolating(work, batch)
        advance(work.units * len(batch))
        yield from batch
        batch.clear()

    for item in prepared:
        if item.status != "ok":
            advance(work.units)
            yield item
            continue
        if batch and (
            work.batch_key(item) != work.batch_key(batch[0])
            or judge_group(work, item) != judge_group(work, batch[0])
        ):
            yield from flush()
        batch.append(item)
        if len(batch) >= work.batch_images:
            yield from flush()
    if batch:
        yield from flush()


def in_order(items: Iterable[Item], start: int = 0) -> Iterator[Item]:
    """``items`` by position, each as soon as every earlier one has come (positions from ``start``, each once)."""
    waiting: dict[int, Item] = {}
    following = start
    for item in items:
        waiting[item.position] = item
        while following in waiting:
            yield waiting.pop(following)
            following += 1


class WorkRecipe(Protocol):
    """A per-image work as two picklable halves, for an engine whose workers are other processes or machines.

    ``prepare`` is the CPU half (decode, distort): it makes an item from a record with no model. ``build`` makes
    the live work, its models from their specs, inside the worker that judges; ``ready`` finishes an item there
    (e.g. distorts it on the models' device). The local loop runs the very same functions in this process.
    """

    device: str
    """Where the models run (``cpu``, ``cuda``): a worker that judges reserves a GPU for ``cuda``."""

    def prepare(self, position: int, record: dict[str, Any]) -> Item: ...

    def build(self) -> PerImageWork: ...

    def ready(self, item: Item, work: PerImageWork) -> Item: ...


@dataclass
class ShardsDone:
    """What :func:`run_shards` did: the parts (in order) and how many came from an interrupted run."""

    parts: list[Path]
    reused: int


FinishedShards = Iterator[tuple[int, list[Item]]]
"""Shards as their last item is judged: (shard index, its items in any order)."""


def local_shards(
    work: PerImageWork,
    pieces: Sequence[Sequence[dict[str, Any]]],
    todo: list[int],
    shard_size: int,
    advance: Callable[[int], None],
) -> FinishedShards:
    """The local engine: each shard to do, in order, prepared and judged in this process (and its loaders)."""
    for index in todo:
        yield index, list(judged(work, work.prepare(index * shard_size, pieces[index]), advance))


def run_shards(
    work: PerImageWork,
    records: Sequence[dict[str, Any]],
    shards: Shards,
    *,
    schema: TableSchema,
    runtime: Runtime,
    recipe: WorkRecipe | None = None,
) -> ShardsDone:
    """Run ``work`` over ``records`` shard by shard into ``shards``' parts (of ``schema``), resuming.

    ``runtime`` says how: shard size, progress, and the engine. The Ray engine needs ``recipe``, the work's
    picklable halves; either engine writes the same parts, so a run killed on one resumes on the other.
    """
    shard_size = runtime.shard_size
    pieces = [records[i : i + shard_size] for i in range(0, len(records), shard_size)]
    guard, todo = FailureGuard(work.label), []
    try:
        with progress_bar(work.label, total=len(records) * work.units, enabled=runtime.progress) as bar:
            for index, piece in enumerate(pieces):
                keys = [[r[column] for column in work.key] for r in piece]
                if shards.done(index, schema, keys, work.key, work.units):
                    bar.advance(len(piece) * work.units)
                else:
                    todo.append(index)
            if runtime.engine.kind == "ray" and todo:
                from saliqa.pipeline.engines.ray_data import ray_shards

                finished = ray_shards(work, recipe, pieces, todo, runtime.engine, bar.advance)
            else:
                finished = local_shards(work, pieces, todo, shard_size, bar.advance)
            for index, items in finished:
                items.sort(key=lambda item: item.position)
                guard.shard(index, items)
                work.before_commit(index, items)
                shards.commit(index, schema.frame(row for item in items for row in work.rows(item)), schema)
            guard.finish()
    except StageFailed:
        for doomed in guard.doomed:
            shards.part(doomed).unlink(missing_ok=True)
        raise
    finally:
        work.close()
    return ShardsDone(shards.paths(len(pieces)), len(pieces) - len(todo))
