"""A bounded log during outages.

When the broker or Redis is away, aiokafka and Faust log every failed connection attempt (about
200 lines a second were seen in a 20 s broker outage). `RepeatFilter`, on the worker's log
handlers, lets a warning or error through once, then holds back the same message (the same
logger and text) for `window` seconds and says how many it held back when the next one
passes. Messages below WARNING are untouched.
"""
from __future__ import annotations

import logging
import time
from typing import Callable


class RepeatFilter(logging.Filter):
    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 1000):
        super().__init__()
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self.seen: dict[tuple[str, str], list] = {}  # (logger, text) -> [last passed at, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()[:200]
        except Exception:  # noqa: BLE001 - a bad format: let the handler report it
            return True
        key = (record.name, text)
        now = self.clock()
        entry = self.seen.get(key)
        if entry is None:
            if len(self.seen) >= self.max_keys:  # bounded, whatever the messages
                self.seen.clear()
            self.seen[key] = [now, 0]
            return True
        if now - entry[0] < self.window:
            entry[1] += 1
            return False
        if entry[1]:
            record.msg = f"{record.msg} [the same message {entry[1]} more times in the last {now - entry[0]:.0f}s]"
        entry[0], entry[1] = now, 0
        return True


def install(window: float = 30.0) -> RepeatFilter:
    """Put one RepeatFilter on every handler of the root logger (where Faust's worker logs go)."""
    flt = RepeatFilter(window)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
