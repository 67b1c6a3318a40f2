"""The core's only module-level mutable state: bounded caches of pure functions of their key."""
from __future__ import annotations


class BoundedCache(dict):
    """A dict that forgets everything once it holds ``limit`` entries. Only for values that are a pure
    function of their key (the compiled plan of a model fingerprint, the hour of a fingerprint key), so
    forgetting costs recomputation, never a different result; reads are plain ``dict.get``."""

    __slots__ = ("limit",)

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
