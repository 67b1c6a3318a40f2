"""The Redis read model: a projection of the score-update topic for readers.

Per account a hash with the current score, band, segment, coverage, components and the
explanation of the last change; a sorted set ranking accounts by score; one set per band (its
size is the band's count); a bounded per-account score history for the evolution chart.

Each update is applied by one Lua script, atomically, and only if its per-account sequence
number is newer than the stored one: replaying the topic (after a crash, or from the start)
leaves the same state, and an older update never overwrites a newer one.
"""
from __future__ import annotations

import orjson
import redis.asyncio as aioredis

APPLY_UPDATE = """
local prefix, account, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local score, band, at_ms, history_len = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local key = prefix .. ':account:' .. account
local current = tonumber(redis.call('HGET', key, 'seq') or '-1')
if seq <= current then return 0 end
if score ~= '' then
  local history = prefix .. ':history:' .. account
  redis.call('ZADD', history, at_ms, seq .. ':' .. score)
  redis.call('ZREMRANGEBYRANK', history, 0, -history_len - 1)
end
local old_band = redis.call('HGET', key, 'band')
if old_band and old_band ~= '' and old_band ~= band then
  redis.call('SREM', prefix .. ':band:' .. old_band, account)
end
if band ~= '' then redis.call('SADD', prefix .. ':band:' .. band, account) end
if score ~= '' then
  redis.call('ZADD', prefix .. ':ranking', tonumber(score), account)
else
  redis.call('ZREM', prefix .. ':ranking', account)
end
redis.call('SADD', prefix .. ':accounts', account)
redis.call('HSET', key, 'seq', seq, 'score', score, 'band', band, 'record', ARGV[8])
return 1
"""


def _text(value) -> str:
    return "" if value is None else str(value)


class ReadModel:
    """Writes score updates into Redis and reads the current picture back."""

    def __init__(self, client: aioredis.Redis, prefix: str = "health", history_len: int = 500):
        self.client = client
        self.prefix = prefix
        self.history_len = history_len
        self._apply = client.register_script(APPLY_UPDATE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "health", **kwargs) -> "ReadModel":
        return cls(aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix, **kwargs)

    async def apply(self, updates: list[tuple[dict, bytes]]) -> int:
        """Apply (decoded score update, its raw JSON) pairs in one pipeline; returns how many were newer."""
        if not updates:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for update, raw in updates:
            await self._apply(keys=[], args=[
                self.prefix, update["account_id"], update["seq"], _text(update.get("score")),
                _text(update.get("band")), int(update["computed_at_ms"]), self.history_len, raw,
            ], client=pipe)
        return sum(await pipe.execute())

    async def account(self, account_id: str) -> dict | None:
        raw = await self.client.hget(f"{self.prefix}:account:{account_id}", "record")
        return orjson.loads(raw) if raw else None

    async def band_counts(self, bands: list[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for band in bands:
            pipe.scard(f"{self.prefix}:band:{band}")
        return dict(zip(bands, await pipe.execute()))

    async def ranking(self, limit: int = 10, worst_first: bool = True) -> list[tuple[str, float]]:
        key = f"{self.prefix}:ranking"
        rows = await (self.client.zrange(key, 0, limit - 1, withscores=True) if worst_first
                      else self.client.zrevrange(key, 0, limit - 1, withscores=True))
        return [(a.decode() if isinstance(a, bytes) else a, s) for a, s in rows]

    async def history(self, account_id: str) -> list[tuple[int, float]]:
        """(time in ms, score) oldest first."""
        rows = await self.client.zrange(f"{self.prefix}:history:{account_id}", 0, -1, withscores=True)
        out = []
        for member, at_ms in rows:
            member = member.decode() if isinstance(member, bytes) else member
            out.append((int(at_ms), float(member.split(":", 1)[1])))
        return out

    async def close(self) -> None:
        await self.client.aclose()
