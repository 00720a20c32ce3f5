import attrs
import trio

import trioforge

registry = trioforge.Registry()


@attrs.frozen
class Welcome:
    user: str


@registry.job(
    "emails:welcome",
    queue="emails",
    retry=trioforge.Retry(max_attempts=5, base_delay=1.0, on=(ConnectionError,)),
)
async def send_welcome(ctx: trioforge.JobContext, payload: Welcome) -> str:
    await ctx.progress(50, "rendering")
    return f"sent to {payload.user}"


async def main() -> None:
    async with trioforge.open_runtime(registry, queues={"emails": 8}) as rt:
        job = await rt.enqueue(send_welcome, Welcome("ada"))  # a trioforge.Job[str]
        print(await job.result())  # sent to ada


if __name__ == "__main__":
    trio.run(main)
