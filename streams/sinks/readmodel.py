"""The Redis read model: a projection of the score-update topic for readers.

Per account a hash with the current score, band, segment, coverage, components and the
explanation of the last change; a sorted set ranking accounts by score; one set per band (its
size is the band's count); a bounded per-account score history for the evolution chart.

Each update is applied by one Lua script, atomically, and only if its per-account sequence
number is newer than the stored one: replaying the topic (after a crash, or from the start)
leaves the same state, and an older update never overwrites a newer one.

Per partition of the score topic a marker hash, `{prefix}:readmodel:p{partition}`, says that Redis
holds that partition's projection: `state` (`building` while the sink replays the partition from
its start, then `built`), `offset` (every update of the partition below it is in Redis), `target`
(the end of the partition when the build started), `owner` (the sink that claimed the partition
last) and `started_ms`. Redis losing its data loses the markers with it, which is how the sink
notices the loss: `apply` moves the marker of each partition of the batch in the same pipeline, after
the updates, and only if it still exists; the sink rebuilds a partition whose marker is gone.
"""
from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from schemas.outputs import band_label, iso

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


# the marker of a partition: moved to `offset` (and to `state`, unless empty) if it exists and `owner` holds it
MARK = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 0 end
if owner ~= ARGV[1] then return 2 end
redis.call('HSET', KEYS[1], 'offset', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[3]) end
return 1
"""

# the fields of a partition's marker (none if it is gone), claimed for `owner` if it exists
CLAIM = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then redis.call('HSET', KEYS[1], 'owner', ARGV[1]) end
return fields
"""

# a fresh marker for a partition to replay, unless another sink holds the partition's marker now (the
# partition was handed over while this sink decided to rebuild it): 1 written, 0 not
START = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'offset', ARGV[3], 'target', ARGV[4], 'owner', ARGV[1],
           'started_ms', ARGV[5])
return 1
"""

MARK_LOST, MARK_OK, MARK_TAKEN = 0, 1, 2  # what MARK found: no marker, ours, claimed by another sink
BUILDING, BUILT = "building", "built"


def _text(value) -> str:
    return "" if value is None else str(value)


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ReadModel:
    """Writes score updates into Redis and reads the current picture back."""

    def __init__(self, client: aioredis.Redis, prefix: str = "health", history_len: int = 500):
        self.client = client
        self.prefix = prefix
        self.history_len = history_len
        self._apply = client.register_script(APPLY_UPDATE)
        self._mark = client.register_script(MARK)
        self._claim = client.register_script(CLAIM)
        self._start = client.register_script(START)

    @classmethod
    def from_url(cls, url: str, prefix: str = "health", *, redis_options: dict | None = None,
                 **kwargs) -> "ReadModel":
        return cls(aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5, **(redis_options or {})),
                   prefix, **kwargs)

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "ReadModel":
        """The read model at the settings' Redis, with their credentials and TLS."""
        return cls.from_url(settings.redis_url, settings.redis_prefix, redis_options=settings.redis_options(),
                            **kwargs)

    def marker_key(self, partition: int) -> str:
        return f"{self.prefix}:readmodel:p{partition}"

    async def apply(self, updates: list[tuple[dict, bytes]], marks: dict[int, tuple[int, str]] | None = None,
                    owner: str = "") -> tuple[int, dict[int, int]]:
        """Apply (decoded score update, its raw JSON) pairs in one pipeline, then move the markers of
        `marks` (partition -> (next offset, new state or "")) held by `owner`. Returns how many updates were
        newer, and per marked partition MARK_OK, MARK_LOST (its marker is gone: Redis lost data) or MARK_TAKEN."""
        marks = marks or {}
        if not updates and not marks:
            await self.client.ping()  # nothing to write, but Redis must answer: the sink learns it is back
            return 0, {}
        pipe = self.client.pipeline(transaction=False)
        for update, raw in updates:
            await self._apply(keys=[], args=[
                self.prefix, update["account_id"], update["seq"], _text(update.get("score")),
                _text(band_label(update.get("score"), update.get("band"))), int(update["computed_at_ms"]),
                self.history_len, raw,
            ], client=pipe)
        for partition, (offset, state) in marks.items():  # after the updates: a loss before them shows here
            await self._mark(keys=[self.marker_key(partition)], args=[owner, offset, state], client=pipe)
        results = await pipe.execute()
        n = len(updates)
        return sum(results[:n]), dict(zip(marks, results[n:]))

    async def claim_markers(self, partitions: list[int], owner: str) -> dict[int, dict[str, str] | None]:
        """The marker of each partition (None where it is gone), claimed for `owner` where it exists."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            await self._claim(keys=[self.marker_key(partition)], args=[owner], client=pipe)
        out = {}
        for partition, flat in zip(partitions, await pipe.execute()):
            flat = [_str(v) for v in flat]
            out[partition] = dict(zip(flat[::2], flat[1::2])) if flat else None
        return out

    async def marker_owners(self, partitions: list[int]) -> dict[int, str | None]:
        """Who holds each partition's marker (None where the marker is gone)."""
        pipe = self.client.pipeline(transaction=False)
        for partition in partitions:
            pipe.hget(self.marker_key(partition), "owner")
        return {p: (_str(o) if o is not None else None) for p, o in zip(partitions, await pipe.execute())}

    async def start_builds(self, builds: dict[int, tuple[int, int]], owner: str, now_ms: int) -> set[int]:
        """Write a fresh marker for each partition -> (first offset, end offset) to replay: `building`,
        or `built` at once when there is nothing to replay. Returns the partitions written (not those
        whose marker another sink holds by now)."""
        pipe = self.client.pipeline(transaction=False)
        for partition, (start, target) in builds.items():
            await self._start(keys=[self.marker_key(partition)], client=pipe, args=[
                owner, BUILDING if target > start else BUILT, start, target, now_ms])
        return {p for p, ok in zip(builds, await pipe.execute()) if ok}

    async def account(self, account_id: str) -> dict | None:
        """The account's latest score record, with its snooze (`snooze`: until, reason, at) while one runs."""
        key = f"{self.prefix}:account:{account_id}"
        pipe = self.client.pipeline(transaction=False)  # two HGETs: the commands its Redis user has
        pipe.hget(key, "record")
        pipe.hget(key, "snooze")
        record, snooze = await pipe.execute()
        if not record:
            return None
        out = orjson.loads(record)
        if snooze:
            shown = orjson.loads(snooze)
            if shown.get("until_ts", 0) > time.time():  # lapsed: its end is past (the workers' clock is real time)
                out["snooze"] = {k: shown[k] for k in ("until", "reason", "at")}
        return out

    async def set_snooze(self, account_id: str, until: float | None, reason: str, at: float, now: float) -> None:
        """Show an account's snooze (None: ended) with its record, in its hash (the commands the read model's
        Redis user has already). Every worker writes the snoozes it reads (the same values): at its start all
        of them, then each new one."""
        key = f"{self.prefix}:account:{account_id}"
        if until is None or until <= now:
            await self.client.hset(key, "snooze", "")
            return
        value = orjson.dumps({"until": iso(until), "until_ts": until, "reason": reason, "at": iso(at)})
        await self.client.hset(key, "snooze", value)

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
