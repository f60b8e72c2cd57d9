"""Progress bars on stderr (rich), so stdout stays clean for ``--json`` output."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

_console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[_Bar]:
    """A bar over ``total`` items; a no-op when disabled (tests, library use)."""
    if not enabled:
        yield _Bar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))


@contextlib.contextmanager
def progress_callback(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback whose bar appears only once work is reported (no empty bars)."""
    with contextlib.ExitStack() as stack:
        state: dict[str, tuple[Progress, TaskID]] = {}

        def report(done: int, total: int) -> None:
            if not enabled:
                return
            if "bar" not in state:
                columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
                progress = stack.enter_context(Progress(*columns, console=_console))
                state["bar"] = (progress, progress.add_task(description, total=total))
            progress, task = state["bar"]
            progress.update(task, completed=done, total=total)

        yield report
