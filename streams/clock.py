"""The worker's processing clock, injected: real time, or a time read from a file.

The file clock lets tests and the demo move time forward (days pass, windows slide, an account
that went quiet decays) without waiting; event time always comes from the events themselves.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path


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


def clock_from(path: Path | None) -> Clock:
    return FileClock(path) if path else Clock()
