"""trioforge in one screen: a trio app with a job runtime on an embedded SQLite file.

Run it with `make demo` (or `python examples/quickstart.py`). It enqueues six jobs that show
success, progress, a flaky job that succeeds on retry, a job discarded to the dead-letter
state, a delayed job, and a long job cancelled while running; it prints what happens as it
happens and exits 0 once every job is terminal. ``enqueue`` returns a typed handle
(``trioforge.Job[R]``): ``await job.result()`` is the handler's return value, decoded.
"""

from __future__ import annotations

import datetime as dt
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


@registry.job("video:transcode", timeout=dt.timedelta(minutes=1))
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
            "delayed cleanup": await rt.enqueue(cleanup, delay=dt.timedelta(seconds=0.5)),
            "long transcode": await rt.enqueue(transcode, "talk.mp4"),
        }
        print(f"enqueued {len(jobs)} jobs: {[job.id for job in jobs.values()]}")

        # A handle is typed by its handler: `pages` is an int, as build_report returns.
        report = await rt.enqueue(build_report, 2)
        pages: int = await report.result(timeout=10)
        print(f"a second report has {pages} pages")

        # Cancel the long job once it is running.
        long_job = jobs["long transcode"]
        with trio.fail_after(10):
            await transcoding.wait()
        print(f"cancelling job {long_job.id} while it runs")
        await long_job.cancel()

        print("results:")
        outcomes: dict[str, JobState] = {}
        with trio.fail_after(30):
            for label, job in jobs.items():
                try:
                    detail = repr(await job.result())
                except (trioforge.JobFailedError, trioforge.JobCancelledError) as exc:
                    detail = f"no result ({exc.info.error or 'cancelled'})"
                info = await job.info()
                outcomes[label] = info.status
                tries = f"{info.attempt} attempt(s)"
                print(f"  {label:16} job {job.id}: {info.status} after {tries}: {detail}")
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
