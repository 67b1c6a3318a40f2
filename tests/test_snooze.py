"""Snoozes (issue 11, finding 1): an operator's order on the control topic keeps an account's alerts
unpublished until a date. No broker: messages judged, the workers' map, and the processor's suppression."""
from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from schemas.events import AccountEvent, encode_event
from streams.core import parse_model
from streams.worker.control import (BAD_SIGNATURE, MALFORMED, UNSIGNED, Snooze, judge, snooze_key,
                                    snooze_message)
from streams.worker.processor import HealthProcessor, OutputTopics, partition_for
from streams.worker.snoozes import Snoozes

NOW = 1_790_000_000.0
SECRET = "s" * 32


def test_a_snooze_message_is_judged_and_signed_like_a_model():
    verdict = judge(3, snooze_message("acme", NOW + 86400, "renewal call on Monday", NOW), "t.control")
    assert verdict.snooze == Snooze("acme", NOW + 86400, "renewal call on Monday", NOW) and verdict.outcome is None
    assert snooze_key("acme") == b"snooze:acme"
    ended = judge(4, snooze_message("acme", None, "", NOW), "t.control")
    assert ended.snooze.until is None
    signed = snooze_message("acme", NOW + 60, "x", NOW, SECRET)
    assert judge(5, signed, "t.control", SECRET).snooze is not None
    assert judge(5, snooze_message("acme", NOW + 60, "x", NOW), "t.control", SECRET).outcome == UNSIGNED
    forged = orjson.loads(signed)
    forged["until"] = NOW + 10 ** 8  # a longer snooze than the one signed
    assert judge(6, orjson.dumps(forged), "t.control", SECRET).outcome == BAD_SIGNATURE
    assert judge(7, snooze_message("acme", NOW + 60, "x", NOW, "another secret of 32 bytes......."), "t.control",
                 SECRET).outcome == BAD_SIGNATURE


@pytest.mark.parametrize("message", [
    {"type": "snooze", "until": NOW, "reason": ""},
    {"type": "snooze", "account_id": "", "until": NOW, "reason": ""},
    {"type": "snooze", "account_id": "a" * 129, "until": NOW, "reason": ""},
    {"type": "snooze", "account_id": "a", "until": "tomorrow", "reason": ""},
    {"type": "snooze", "account_id": "a", "until": 1e13, "reason": ""},
    {"type": "snooze", "account_id": "a", "until": True, "reason": ""},
    {"type": "snooze", "account_id": "a", "until": NOW, "reason": "x" * 501},
    {"type": "snooze", "account_id": "a", "until": NOW, "reason": None},
])
def test_a_malformed_snooze_is_refused_with_its_reason(message):
    verdict = judge(1, orjson.dumps(message), "t.control")
    assert verdict.snooze is None and verdict.outcome == MALFORMED, verdict
    assert "snooze" in verdict.reason, verdict.reason


def test_the_workers_map_keeps_the_latest_order_per_account_within_its_bound():
    snoozes = Snoozes(limit=2)
    assert snoozes.apply(Snooze("a", NOW + 100, "r", NOW), NOW)
    assert snoozes.active("a", NOW + 99).reason == "r" and snoozes.active("a", NOW + 100) is None
    assert snoozes.apply(Snooze("b", NOW + 50, "r", NOW), NOW)
    assert not snoozes.apply(Snooze("c", NOW + 100, "r", NOW), NOW)  # the bound: refused, counted
    assert snoozes.refused == 1 and snoozes.active("c", NOW) is None
    assert snoozes.apply(Snooze("c", NOW + 100, "r", NOW), NOW + 60)  # b expired: its place is free
    assert snoozes.apply(Snooze("a", None, "", NOW), NOW)  # unsnoozed
    assert snoozes.active("a", NOW) is None and len(snoozes) == 1


def test_a_snoozed_accounts_alerts_are_not_published_but_its_scores_are():
    model = parse_model({"version": "t", "measures": {"r": {"type": "attribute", "attribute": "r"}},
                         "components": {"r": {"measure": "r", "scoring": {"type": "max", "max": 100}}},
                         "alerts": {"band_change": {"margin_points": 0, "cooldown_seconds": 0}}})
    snoozes = Snoozes()
    proc = HealthProcessor(model, OutputTopics("s", "a", "d"), {"in.accounts": "account"}, 4, snoozes=snoozes)
    table: dict = {}

    def rate(i: int, rating: int):
        event = AccountEvent(f"e{i}", "acme", NOW - 600 + i, {"r": rating})
        record = SimpleNamespace(key=b"acme", value=encode_event(event), offset=i, timestamp=1000 + i)
        result = proc.process([("in.accounts", partition_for("acme", 4), [record])], table.get, NOW)
        table.update({k: v for k, (_, v) in result.writes.items()})
        return result, [orjson.loads(o.value) for o in result.outputs]

    rate(0, 90)
    snoozes.apply(Snooze("acme", NOW + 3600, "renewal call", NOW), NOW)
    result, outputs = rate(1, 20)
    assert [o["score"] for o in outputs if "specversion" not in o] == [20.0]  # the score update goes out
    assert not [o for o in outputs if "specversion" in o] and result.alerts_snoozed == 1
    snoozes.apply(Snooze("acme", None, "", NOW), NOW)
    result, outputs = rate(2, 90)  # the move back is news again
    assert [o["type"] for o in outputs if "specversion" in o] == ["health.band.recovered"]


def test_what_a_worker_could_not_show_or_hold_is_refused_before_it_costs_anything():
    import asyncio

    from streams.worker.control import UNKNOWN, ControlChannel, _not_a_stray_snooze

    # an end past the year 9999 cannot be shown as a time: refused, not a crash of the reader
    assert judge(1, snooze_message("acme", 5e11, "x", NOW), "t.control").outcome == MALFORMED
    # a large message under a snooze key is not parsed on the event loop
    outcomes = []
    taken = []

    async def on_snooze(snooze, live):
        taken.append(snooze)

    channel = ControlChannel("127.0.0.1:1", "t.control", on_outcome=lambda o, live: outcomes.append(o),
                             on_snooze=on_snooze)
    big = orjson.dumps({"type": "model", "version": "x", "yaml": "#" * 10_000})
    asyncio.run(channel._snooze(2, big, live=True))
    asyncio.run(channel._snooze(3, snooze_message("acme", NOW + 60, "x", NOW), live=True))
    assert outcomes == [MALFORMED, "applied"] and [s.account_id for s in taken] == ["acme"]
    # a snooze under another key (the model's) is refused alike at start and while running
    stray = _not_a_stray_snooze(judge(4, snooze_message("acme", NOW + 60, "x", NOW), "t.control"))
    assert stray.outcome == UNKNOWN and "not under its key" in stray.reason


def test_a_flood_of_bad_snooze_messages_or_snoozes_over_the_bound_logs_little(caplog):
    import asyncio
    import logging

    from streams.worker.control import ControlChannel

    channel = ControlChannel("127.0.0.1:1", "t.control")
    with caplog.at_level(logging.ERROR):
        for offset in range(1000):
            asyncio.run(channel._snooze(offset, b"not json", live=False))
    refused = [r for r in caplog.records if "control message refused" in r.getMessage()]
    assert channel.snoozes_refused == 1000 and len(refused) == 10  # 1, 2, 4 ... 512
    caplog.clear()
    snoozes = Snoozes(limit=1)
    with caplog.at_level(logging.ERROR):
        for i in range(1000):
            snoozes.apply(Snooze(f"a{i}", NOW + 60, "r", NOW), NOW)
    assert snoozes.refused == 999 and len(caplog.records) == 10
