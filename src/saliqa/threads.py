"""CPU thread counts that do not fight each other.

torch runs each large CPU op on an OpenMP team (intra-op threads) and ends it at a barrier; its teams
spin before they sleep (GNU OpenMP's default wait policy). When more threads want to run than there are
cores -- a second CPU-heavy process, or loader workers beside a multi-threaded main process -- a team member
that the scheduler has preempted holds every op's barrier until its next time slice, while its partners
spin on the cores it needs: an image's hundreds of small ops each wait a slice, and a batch runs 10-30x
slower, where a single-threaded program would only lose its share of the cores (about 2x). So the parts of
saliqa that run many small ops (the corruptions) use one thread per op and spread whole images over the
cores instead, and loader workers run single-threaded.

The core count is the process's own: its CPU affinity (``taskset``, a batch scheduler's allocation) capped by
a cgroup CPU quota (a container's ``--cpus``), not the machine's.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch

__all__ = [
    "available_cores",
    "cgroup_cpu_quota",
    "init_loader_worker",
    "parallel_map",
    "single_threaded_ops",
    "thread_cap",
    "threads_beside",
]

T = TypeVar("T")
R = TypeVar("R")

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

_lock = threading.Lock()
_depth = 0  # nesting of single_threaded_ops across threads
_saved = 1  # torch's thread count before the outermost single_threaded_ops


def cgroup_cpu_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max`` = "quota period"), or None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def thread_cap() -> int | None:
    """The thread count the environment asks for (``OMP_NUM_THREADS``), or None when unset or unreadable.

    It is how a scheduler hands a share of a machine to a process: Ray sets it to the CPUs of each task and
    actor, many batch systems to the cores of the job, and saliqa's loader workers to 1.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def available_cores() -> int:
    """Cores this process may use: its affinity mask, capped by a cgroup quota (rounded up) and by the
    environment's thread count (:func:`thread_cap`), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    cap = thread_cap()
    if cap is not None:
        cores = min(cores, cap)
    return max(1, cores)


def threads_beside(workers: int, cores: int | None = None) -> int:
    """Intra-op threads for a process that shares the cores with ``workers`` busy single-threaded workers.

    What is left of the cores after the workers, at least 1: more would be preempted at every barrier.
    """
    cores = available_cores() if cores is None else cores
    return max(1, cores - max(0, workers))


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Run torch's CPU ops on the calling threads only (``torch.set_num_threads(1)``), then restore.

    torch's thread count is process-wide, so this holds for every thread while any caller is inside;
    nested and concurrent uses restore the count once, when the last one leaves. Results do not change:
    saliqa's corruptions give the same values on any number of threads (their tests hold them to it).
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            if _saved != 1:
                torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved != 1:
                torch.set_num_threads(_saved)


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(item) for item in items]`` on up to ``workers`` threads (default: the available cores).

    Each call of ``fn`` runs its torch ops single-threaded (see :func:`single_threaded_ops`), so the cores
    are shared out by whole items with no barrier between them; numpy, scipy and Pillow release the GIL
    in their heavy loops too. One item, or one core, runs in the calling thread. Results keep the order of
    ``items``; the first exception raised is re-raised.
    """
    workers = min(len(items), available_cores() if workers is None else workers)
    with single_threaded_ops():
        if workers <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="saliqa") as pool:
            return list(pool.map(fn, items))


def init_loader_worker(worker_id: int) -> None:
    """``worker_init_fn`` of saliqa's loaders: one thread for torch, OpenMP and BLAS in each worker.

    torch's DataLoader already sets its own thread count to 1 in a worker; numpy's BLAS and any other
    OpenMP runtime keep one thread per core unless told (through threadpoolctl, when installed), and
    ``workers`` processes of that many threads each oversubscribe the cores. No computed value changes.
    """
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and saliqa's own thread pools (parallel_map) stay in one thread
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, brings it
        return
    threadpool_limits(limits=1)
