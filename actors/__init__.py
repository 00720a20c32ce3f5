"""The moving parts of a runtime, one actor per concern.

Actors talk through trio memory channels and own only their own state. They import the
storage protocol and the runtime's leaf modules (rules, errors, clock), never its public API.
"""

from trioforge.actors.attempts import Ended, JobTable
from trioforge.actors.leases import heartbeat, reaper
from trioforge.actors.listener import listener
from trioforge.actors.live import LiveFeed, live_feed, open_live_feed
from trioforge.actors.queue import QueueConfig, QueueSupervisor
from trioforge.actors.running import Finished, RunningJobs, StopReason
from trioforge.actors.step_starts import StepStarts
from trioforge.actors.storage_actor import StorageHandle, open_storage_channel, storage_actor

__all__ = [
    "Ended",
    "Finished",
    "JobTable",
    "LiveFeed",
    "QueueConfig",
    "QueueSupervisor",
    "RunningJobs",
    "StepStarts",
    "StopReason",
    "StorageHandle",
    "heartbeat",
    "listener",
    "live_feed",
    "open_live_feed",
    "open_storage_channel",
    "reaper",
    "storage_actor",
]
