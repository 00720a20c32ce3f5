"""What one running job of a wide pool holds: N jobs that sleep, measured once all run.

``python -m bench.wide_memory --jobs 5000``: the RSS added per running job, the objects the
garbage collector tracks per job (by type, coroutines by function), and with ``--trace``
tracemalloc's bytes per job, grouped by where they were allocated (the innermost frame,
and the innermost trioforge or bench frame that led there). With ``--after``, what is left
once a burst of N one-second jobs has ended: the worker tasks, and the objects the garbage
collector tracks beyond those before the runtime started. The figures of
docs/performance.md ("Wide pools") come from here; compare two commits by running it
from each one's worktree.
"""

from __future__ import annotations

import argparse
import collections
import gc
import tempfile
import tracemalloc
from pathlib import Path
from types import CoroutineType

import trio

import trioforge
from bench.trioforge_side import COUNT, io_bound, registry, rss_kib


def kind(obj: object) -> str:
    """A tracked object's type; a coroutine's function, which says whose frame it is."""
    if isinstance(obj, CoroutineType):
        return f"coroutine {obj.cr_code.co_qualname}"
    return type(obj).__qualname__


def tracked() -> collections.Counter[str]:
    return collections.Counter(kind(obj) for obj in gc.get_objects())


def where(trace: tracemalloc.Traceback) -> str:
    frames = list(trace)
    ours = next(
        (f for f in reversed(frames) if "trioforge" in f.filename or "bench" in f.filename), None
    )
    inner = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}"
    return inner if ours is None else f"{inner} <- {Path(ours.filename).name}:{ours.lineno}"


def workers() -> int:
    """The wide queue's worker tasks alive."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        nursery = nurseries.pop()
        for task in nursery.child_tasks:
            count += task.name == "wide-worker"
            nurseries.extend(task.child_nurseries)
    return count


async def enqueue(url: str, jobs: int, seconds: float) -> None:
    async with trioforge.open_client(url) as client:
        for start in range(0, jobs, 5000):
            batch = len(range(start, min(jobs, start + 5000)))
            await client.enqueue_many(io_bound, [seconds] * batch)


async def after_burst(url: str, jobs: int) -> None:
    await enqueue(url, jobs, 1.0)
    COUNT.target = jobs
    gc.collect()
    before = len(gc.get_objects())
    async with trioforge.open_runtime(registry, database=url, queues={"wide": jobs}):
        await COUNT.all_done.wait()
        await trio.sleep(2.0)  # the last outcomes written, the claims after the burst made
        gc.collect()
        print(
            f"{jobs:,} ended: {workers():,} worker tasks left, "
            f"GC-tracked objects +{len(gc.get_objects()) - before:,}"
        )


async def measure(url: str, jobs: int, trace: bool) -> None:
    await enqueue(url, jobs, 600.0)
    gc.collect()
    if trace:
        tracemalloc.start(25)
    before, rss = tracked(), rss_kib()
    first = tracemalloc.take_snapshot() if trace else None
    runtime = trioforge.open_runtime(
        registry, database=url, queues={"wide": jobs}, shutdown_grace=0.0
    )  # leaving the block releases the sleeping jobs at once
    async with runtime:
        while COUNT.running < jobs:
            await trio.sleep(0.05)
        gc.collect()
        added = rss_kib() - rss
        grown = tracked() - before
        print(f"{jobs:,} running: RSS +{added / jobs:.2f} KiB a job")
        print(f"GC-tracked objects: +{grown.total() / jobs:.1f} a job")
        for name, count in grown.most_common():
            if count >= jobs // 2:
                print(f"  {count / jobs:5.2f}  {name}")
        if first is not None:
            stats = tracemalloc.take_snapshot().compare_to(first, "traceback")
            print(f"tracemalloc: +{sum(s.size_diff for s in stats) / jobs:,.0f} B a job")
            sites: collections.Counter[str] = collections.Counter()
            for stat in stats:
                sites[where(stat.traceback)] += stat.size_diff
            for site, size in sites.most_common(40):
                if size >= jobs * 8:
                    print(f"  {size / jobs:5.0f} B  {site}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc too (slow)")
    parser.add_argument("--after", action="store_true", help="once a burst has ended")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'memory.db'}"
        if args.after:
            trio.run(after_burst, url, args.jobs)
        else:
            trio.run(measure, url, args.jobs, args.trace)


if __name__ == "__main__":
    main()
