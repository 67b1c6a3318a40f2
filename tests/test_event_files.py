"""Event files: JSONL and CSV round trips, and bad lines reported with their number and field."""
from __future__ import annotations

from schemas.events import AccountEvent, InvalidEvent, SurveyEvent, TicketEvent, UsageEvent
from streams.tools.event_files import read_csv, read_events, read_jsonl, write_csv, write_jsonl
from streams.tools.simulator import customer_base, history

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _sample() -> list:
    return list(history(customer_base(4, seed=1), START, START + 3 * 86400, seed=1))


def _ok(lines) -> list:
    return [item for _, item in lines]


def test_jsonl_round_trip(tmp_path):
    events = _sample()
    assert {e.kind for e in events} == {"usage", "ticket", "survey", "account"}
    path = tmp_path / "events.jsonl"
    assert write_jsonl(events, path) == len(events)
    lines = list(read_events(path))
    assert [n for n, _ in lines] == list(range(1, len(events) + 1))
    assert _ok(lines) == events


def test_csv_round_trip(tmp_path):
    events = _sample()
    path = tmp_path / "events.csv"
    assert write_csv(events, path) == len(events)
    header = path.read_text().splitlines()[0].split(",")
    assert "kind" in header and "attributes.seats" in header and "attributes.renewal_date" in header
    lines = list(read_events(path))
    assert [n for n, _ in lines] == list(range(2, len(events) + 2))  # line 1 is the header
    assert _ok(lines) == events


def test_jsonl_kind_from_the_caller_and_bad_lines_with_their_numbers(tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(b"\n".join([
        b'{"event_id": "e1", "account_id": "a1", "occurred_at": "2026-01-02T10:00:00Z", "name": "login"}',
        b"",  # blank lines are skipped, numbering goes on
        b'{"event_id": "e2", "account_id": "a1", "occurred_at": "2026-01-02T10:00:00", "name": "login"}',
        b"{not json",
        b'{"event_id": "e3", "account_id": 42, "occurred_at": "2026-01-02T10:00:00Z", "name": "login"}',
        b'{"kind": "survey", "event_id": "e4", "account_id": "a1", "occurred_at": "2026-01-02T10:00:00Z",'
        b' "survey": "nps", "score": 9}',
        b'\xff\xfe',
        b'{"event_id": "e5", "account_id": "a2", "occurred_at": "2026-01-02T11:00:00+01:00", "name": "session",'
        b' "value": 12.5, "user_id": "u1"}\r',
    ]))
    lines = list(read_jsonl(path, kind="usage"))
    assert [n for n, _ in lines] == [1, 3, 4, 5, 6, 7, 8]
    got = dict(lines)
    assert got[1] == UsageEvent("e1", "a1", START + 86400 + 36000, "login")
    assert got[8] == UsageEvent("e5", "a2", START + 86400 + 36000, "session", "u1", None, 12.5)
    bad = {n: item for n, item in lines if isinstance(item, InvalidEvent)}
    assert set(bad) == {3, 4, 5, 6, 7}
    assert bad[3].field == "occurred_at" and "zone" in bad[3].reason
    assert bad[4].field == "" and "JSON" in bad[4].reason
    assert bad[5].field == "account_id"
    assert bad[6].field == "kind" and "usage" in bad[6].reason  # the caller's kind disagrees
    assert "UTF-8" in bad[7].reason


def test_jsonl_without_any_kind_names_the_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"event_id": "e1", "account_id": "a1", "occurred_at": "2026-01-02T10:00:00Z", "name": "x"}\n')
    [(n, err)] = list(read_events(path))
    assert n == 1 and isinstance(err, InvalidEvent) and err.field == "kind"


def test_csv_columns_empty_cells_numbers_and_attributes(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(
        "kind,event_id,account_id,occurred_at,ticket_id,action,priority,sla_breached,survey,score,"
        "attributes.seats,attributes.plan,attributes.uptime_pct,attributes.managed,attributes.code\n"
        "ticket,e1,42,2026-01-02T10:00:00Z,T1,first_response,,yes,,,,,,,\n"
        "survey,e2,42,2026-01-02T10:00:00Z,,,,,csat,4,,,,,\n"
        "account,e3,42,2026-01-02T10:00:00Z,,,,,,,25,business,99.95,true,nan\n"
    )
    events = _ok(read_csv(path))
    assert events == [
        TicketEvent("e1", "42", START + 86400 + 36000, "T1", "first_response", None, True),
        SurveyEvent("e2", "42", START + 86400 + 36000, "csat", 4.0),
        AccountEvent("e3", "42", START + 86400 + 36000,
                     {"seats": 25, "plan": "business", "uptime_pct": 99.95, "managed": True, "code": "nan"}),
    ]
    assert events[0].account_id == "42"  # ids stay text, as the contract requires
    assert isinstance(events[2].attributes["seats"], int)


def test_csv_bad_rows_are_reported_with_line_and_field(tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        "event_id,account_id,occurred_at,name,value,user_id\n"       # line 1
        "e1,a1,2026-01-02T10:00:00Z,login,,u1\n"                      # 2: good, value absent
        "e2,a1,2026-01-02T10:00:00Z,session,lots,u1\n"                # 3: value not a number
        "e3,a1,yesterday,login,,u1\n"                                 # 4: bad timestamp
        "\n"                                                          # 5: blank, skipped
        'e4,a1,2026-01-02T10:00:00Z,"multi\nline name",3,u1\n'        # 6-7: one row over two lines
        "e5,,2026-01-02T10:00:00Z,login,,u1\n"                        # 8: account_id missing
        "e6,a1,2026-01-02T10:00:00Z,login,,u1,extra\n"                # 9: too many cells
        "e7,a1,2026-01-02T10:00:00Z,login,1e3,u2\n"                   # 10: good
    )
    lines = list(read_csv(path, kind="usage"))
    assert [n for n, _ in lines] == [2, 3, 4, 6, 8, 9, 10]
    got = dict(lines)
    assert got[2] == UsageEvent("e1", "a1", START + 86400 + 36000, "login", "u1")
    assert got[6].name == "multi\nline name" and got[6].value == 3.0
    assert got[10].value == 1000.0
    assert got[3].field == "value" and "'lots'" in got[3].reason
    assert got[4].field == "occurred_at"
    assert got[8].field == "account_id" and "missing" in got[8].reason
    assert isinstance(got[9], InvalidEvent) and "cells" in got[9].reason


def test_csv_header_only_or_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("kind,event_id\n")
    assert list(read_csv(tmp_path / "empty.csv")) == []
    assert list(read_csv(tmp_path / "header.csv")) == []
