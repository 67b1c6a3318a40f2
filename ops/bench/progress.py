"""The progress of a baseline app of the benchmark (ops/bench/faust_baselines.py, quix_baselines.py): it
counts the events it processed and, at the BENCH_TOTAL-th, writes its span to BENCH_OUT."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

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
