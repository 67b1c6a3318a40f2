"""Outage logging is bounded; text from outside is escaped before it reaches a log or a terminal."""
from __future__ import annotations

import logging

import pytest

from streams.worker.quiet_logs import RepeatFilter
from streams.settings import Settings
from streams.text import printable


def record(msg: str, level=logging.ERROR, name="aiokafka.conn", args=()) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_repeated_warning_passes_once_per_window_and_says_how_many_were_held_back():
    now = [0.0]
    flt = RepeatFilter(window=30, clock=lambda: now[0])
    passed = []
    for i in range(200 * 20):  # 200 lines a second for 20 seconds
        now[0] = i / 200
        r = record("Unable connect to node with id %s: %r", args=(1, "refused"))
        if flt.filter(r):
            passed.append(r)
    now[0] = 31.0
    last = record("Unable connect to node with id %s: %r", args=(1, "refused"))
    assert len(passed) == 1 and flt.filter(last)
    assert "the same message 3999 more times" in last.getMessage()
    assert flt.filter(record("another message"))  # other messages are not held back
    assert all(flt.filter(record("debug detail", level=logging.INFO)) for _ in range(5))


def test_the_filter_stays_bounded_whatever_the_messages():
    flt = RepeatFilter(max_keys=100)
    for i in range(10_000):
        flt.filter(record(f"message {i}"))
    assert len(flt.seen) <= 100


def test_printable_escapes_what_could_forge_a_log_line_or_drive_a_terminal():
    assert printable("acct-1\nERROR forged line") == "acct-1\\nERROR forged line"
    assert printable("\x1b[2J\x1b[31mred") == "\\x1b[2J\\x1b[31mred"
    assert printable("line\u2028separator\x85") == "line\\u2028separator\\x85"
    assert printable("Café Zürich 日本") == "Café Zürich 日本"
    assert printable("x" * 50, limit=10) == "x" * 10 + "..."


def test_session_and_heartbeat_timeouts_are_checked(monkeypatch):
    assert Settings().session_timeout_seconds == 10.0  # Faust's own default (60 s) keeps a dead worker's partitions a minute
    monkeypatch.setenv("HEALTH_KAFKA_SESSION_TIMEOUT_SECONDS", "3")
    with pytest.raises(ValueError, match="at least 6"):
        Settings.from_env()
    monkeypatch.setenv("HEALTH_KAFKA_SESSION_TIMEOUT_SECONDS", "9")
    monkeypatch.setenv("HEALTH_KAFKA_HEARTBEAT_SECONDS", "4")
    with pytest.raises(ValueError, match="a third of the session timeout"):
        Settings.from_env()
    monkeypatch.setenv("HEALTH_KAFKA_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ValueError, match="expected a number"):
        Settings.from_env()
