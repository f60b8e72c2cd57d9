"""saliqa.threads: core counts from the process's own limits, single-threaded ops, parallel maps, workers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from saliqa import threads
from saliqa.threads import (
    available_cores,
    cgroup_cpu_quota,
    init_loader_worker,
    parallel_map,
    single_threaded_ops,
    thread_cap,
    threads_beside,
)


@pytest.mark.parametrize(
    ("text", "quota"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("50000 100000", 0.5), ("garbage", None), ("", None)],
)
def test_cgroup_quota_is_read_from_cpu_max(tmp_path: Path, text: str, quota: float | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_cpu_quota(path) == quota


def test_cgroup_quota_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "absent") is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs a CPU affinity mask (Linux)")
def test_available_cores_follow_the_affinity_mask_and_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = os.sched_getaffinity(0)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert available_cores() == len(mask)
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 0.5)
    assert available_cores() == 1  # a fraction of a CPU still runs one thread
    if len(mask) > 1:
        one = {min(mask)}
        os.sched_setaffinity(0, one)
        try:
            monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
            assert available_cores() == 1
        finally:
            os.sched_setaffinity(0, mask)


def test_available_cores_keep_to_the_thread_count_a_scheduler_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_cap() is None and available_cores() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # e.g. a Ray actor of 3 CPUs on an 8-core node
    assert thread_cap() == 3 and available_cores() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # never more than the cores
    assert available_cores() == 8
    for junk in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", junk)
        assert thread_cap() is None and available_cores() == 8


def test_threads_beside_workers_leave_at_least_one() -> None:
    assert threads_beside(0, cores=4) == 4
    assert threads_beside(2, cores=4) == 2
    assert threads_beside(4, cores=4) == 1
    assert threads_beside(8, cores=2) == 1


def test_single_threaded_ops_restore_the_count_once_the_last_user_leaves() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded_ops():
            assert torch.get_num_threads() == 1
            with single_threaded_ops():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), single_threaded_ops():
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_parallel_map_keeps_order_uses_threads_and_single_threaded_ops() -> None:
    seen_threads: set[str] = set()
    counts: set[int] = set()
    barrier = threading.Barrier(2, timeout=10)  # both items must run at the same time to pass it

    def work(item: int) -> int:
        seen_threads.add(threading.current_thread().name)
        counts.add(torch.get_num_threads())
        barrier.wait()
        return item * item

    assert parallel_map(work, [3, 4], workers=2) == [9, 16]
    assert len(seen_threads) == 2 and counts == {1}


def test_parallel_map_runs_inline_for_one_worker_and_reraises() -> None:
    caller = threading.current_thread().name
    assert parallel_map(lambda _: threading.current_thread().name, range(3), workers=1) == [caller] * 3
    assert parallel_map(lambda x: x, [], workers=2) == []

    def fail(item: int) -> int:
        raise ValueError(f"bad {item}")

    with pytest.raises(ValueError, match="bad"):
        parallel_map(fail, [1, 2], workers=2)


def test_parallel_map_gives_the_same_tensor_results_as_a_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    planes = [torch.rand(64, 257, generator=generator, dtype=torch.float64) for _ in range(6)]

    def work(x: torch.Tensor) -> torch.Tensor:
        return (x.exp() * 3).cumsum(1).sum(0)

    expected = [work(x) for x in planes]
    for got, want in zip(parallel_map(work, planes, workers=3), expected, strict=True):
        assert torch.equal(got, want)


def test_loader_workers_run_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # restored, whatever init_loader_worker sets
    with threadpool_limits(limits=None):  # restores BLAS and OpenMP pools on the way out
        try:
            init_loader_worker(0)
            assert torch.get_num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())
            assert available_cores() == 1  # saliqa's own pools stay in one thread too
        finally:
            torch.set_num_threads(before)


class _ThreadCounts(torch.utils.data.Dataset):
    """Reports, from inside a loader worker, the thread counts that worker runs with."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        from threadpoolctl import threadpool_info

        pools = max((pool["num_threads"] for pool in threadpool_info()), default=1)
        return torch.get_num_threads(), pools, int(os.environ.get("SALIQA_TEST_INIT", "0"))


def _mark_init(worker_id: int) -> None:
    os.environ["SALIQA_TEST_INIT"] = str(worker_id + 1)


def test_data_loader_workers_are_single_threaded_and_run_the_callers_init() -> None:
    from saliqa.loading import data_loader

    loader = data_loader(_ThreadCounts(), workers=2, collate_fn=list, batch_size=1, worker_init_fn=_mark_init)
    rows = [row for batch in loader for row in batch]
    assert [(torch_threads, pools) for torch_threads, pools, _ in rows] == [(1, 1), (1, 1)]
    assert sorted(init for _, _, init in rows) == [1, 2]
