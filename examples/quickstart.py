"""trioforge in one screen: a trio app with a job runtime on an embedded SQLite file.

Run it with `make demo` (or `python examples/quickstart.py`). It enqueues six jobs that show
success, progress, a flaky job that succeeds on retry, a job discarded to the dead-letter
state, a delayed job, and a long job cancelled by id while running; it prints what happens
as it happens and exits 0 once every job is terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import trio

import trioforge
from trioforge import JobContext, JobState, Retry

registry = trioforge.Registry()
transcoding = trio.Event()  # set by the long job once it runs, so main can cancel it


@attrs.frozen
class Welcome:
    user: str


def say(text: str) -> None:
    print(f"  {text}", flush=True)


@registry.job("emails:welcome", queue="emails")
async def send_welcome(ctx: JobContext, payload: Welcome) -> str:
    say(f"[job {ctx.job_id}] welcoming {payload.user}")
    return f"welcome mail sent to {payload.user}"


@registry.job("reports:build")
async def build_report(ctx: JobContext, pages: int) -> int:
    for page in range(1, pages + 1):
        await trio.sleep(0.05)  # pretend to render a page
        await ctx.progress(100 * page / pages, f"page {page}/{pages}")
        say(f"[job {ctx.job_id}] progress {100 * page // pages}% (page {page}/{pages})")
    return pages


@registry.job("payments:charge", retry=Retry(max_attempts=4, base_delay=0.2, on=(ConnectionError,)))
async def charge(ctx: JobContext, cents: int) -> str:
    if ctx.attempt < 3:
        say(f"[job {ctx.job_id}] attempt {ctx.attempt}: the payment gateway times out")
        raise ConnectionError("gateway timeout")
    say(f"[job {ctx.job_id}] attempt {ctx.attempt}: charged {cents} cents")
    return "charged"


@registry.job("users:import", retry=Retry(max_attempts=5))
async def import_user(ctx: JobContext, email: str) -> None:
    if "@" not in email:
        say(f"[job {ctx.job_id}] {email!r} is not an address: discarding, no retries")
        raise trioforge.Discard(f"not an email address: {email!r}")


@registry.job("cleanup:tmp")
async def cleanup(ctx: JobContext) -> str:
    say(f"[job {ctx.job_id}] delayed cleanup runs now")
    return "cleaned"


@registry.job("video:transcode", timeout=60)
async def transcode(ctx: JobContext, name: str) -> None:
    say(f"[job {ctx.job_id}] transcoding {name} (this takes a while)")
    transcoding.set()
    try:
        await trio.sleep_forever()
    finally:
        say(f"[job {ctx.job_id}] transcoding stopped; temporary files removed")


async def main() -> int:
    database = Path("quickstart.db")
    for leftover in database.parent.glob(database.name + "*"):
        leftover.unlink()  # start from an empty file so every run shows the same story
    print(f"trioforge quickstart on sqlite:///{database}")
    async with trioforge.open_runtime(
        registry, database=f"sqlite:///{database}", queues={"default": 4, "emails": 2}
    ) as rt:
        jobs = {
            "welcome": await rt.enqueue(send_welcome, Welcome("ada")),
            "report": await rt.enqueue(build_report, 4),
            "flaky charge": await rt.enqueue(charge, 1999),
            "bad import": await rt.enqueue(import_user, "not-an-email"),
            "delayed cleanup": await rt.enqueue(cleanup, delay=0.5),
            "long transcode": await rt.enqueue(transcode, "talk.mp4"),
        }
        print(f"enqueued {len(jobs)} jobs: {jobs}")

        # Cancel the long job by id once it is running.
        long_id = jobs["long transcode"]
        with trio.fail_after(10):
            await transcoding.wait()
        print(f"cancelling job {long_id} while it runs")
        await rt.cancel(long_id)

        print("results:")
        outcomes: dict[str, JobState] = {}
        with trio.fail_after(30):
            for label, job_id in jobs.items():
                info = await rt.wait(job_id)
                outcomes[label] = info.status
                detail = info.result if info.status is JobState.COMPLETED else info.error
                tries = f"{info.attempt} attempt(s)"
                print(f"  {label:16} job {job_id}: {info.status} after {tries}: {detail}")
    expected = {
        "welcome": JobState.COMPLETED,
        "report": JobState.COMPLETED,
        "flaky charge": JobState.COMPLETED,
        "bad import": JobState.DEAD,
        "delayed cleanup": JobState.COMPLETED,
        "long transcode": JobState.CANCELLED,
    }
    if outcomes != expected:
        print(f"unexpected outcomes: {outcomes}", file=sys.stderr)
        return 1
    print("all jobs reached a terminal state")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
