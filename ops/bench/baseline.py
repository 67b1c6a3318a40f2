"""What the baseline apps of the benchmark (ops/bench/faust_baselines.py, quix_baselines.py) share: their
progress (events counted; at the BENCH_TOTAL-th, the span is written to BENCH_OUT) and the scorers' formula."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

DAY = 86400
TOTAL = int(os.environ.get("BENCH_TOTAL", "0"))
OUT = os.environ.get("BENCH_OUT", "/tmp/bench-out.json")


class Progress:
    def __init__(self, about: Callable[[], dict[str, Any]] = dict):
        self.about = about  # more to report at the end (the event loop, the framework's version)
        self.first = None
        self.n = 0

    def tick(self, k: int = 1) -> None:
        if self.first is None:
            self.first = time.time()
        self.n += k
        if self.n == TOTAL:
            with open(OUT, "w") as f:
                json.dump({"first": self.first, "last": time.time(), "events": self.n, **self.about()}, f)


def score(logins_30d: int, last_login: float, open_tickets: int, csat: list | None, csm_rating, now: float) -> float:
    """The baseline scorers' health formula over an account's counters (csat: [sum, answers] or empty)."""
    recency = max(0.0, 30 - (now - last_login) / DAY) / 30 if last_login else 0
    parts = [min(logins_30d / 20, 1.0) * 100, recency * 100, max(0.0, 1 - open_tickets / 4) * 100]
    if csat:
        parts.append((csat[0] / csat[1] - 1) / 4 * 100)
    if csm_rating is not None:
        parts.append(csm_rating * 10)
    return sum(parts) / len(parts)
