"""The worker's processing clock, injected: real time, or a time read from a file.

The file clock lets tests and the demo move time forward (days pass, windows slide, an account
that went quiet decays) without waiting; event time always comes from the events themselves.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

from streams.text import printable

log = logging.getLogger(__name__)


class Clock:
    def now(self) -> float:
        return time.time()

    def wall(self) -> float:
        """Real time, whatever now() says: latency is measured against Kafka's record timestamps."""
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FileClock(Clock):
    """now() is the epoch seconds written in `path` (real time while the file is absent or empty)."""

    def __init__(self, path: Path):
        self.path = path

    def now(self) -> float:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return time.time()
        return float(text) if text else time.time()


async def idle(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if the worker is stopping meanwhile."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def supervised(name: str, run: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
    """Run a background reader (the read model sink, the control topic, the broker watch) until `stopping`
    is set; one that fails (the broker or Redis away, a bug) is logged and started again after 5 s."""
    while not stopping.is_set():
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a background reader must not stop its process
            log.warning("%s stopped (%s: %s); starting it again in 5 s", name, type(err).__name__,
                        printable(str(err), 200))
            await idle(stopping, 5.0)


def clock_from(path: Path | None) -> Clock:
    return FileClock(path) if path else Clock()
