"""Events from and to files: JSON Lines and CSV, for replays, imports and demos.

Reading never stops at a bad line: every line comes back as ``(line_number, event)`` or
``(line_number, InvalidEvent)``, so a tool can report "line 12: occurred_at: expected ..."
and carry on with the rest of the file. Validation is the contract's own decoder
(:mod:`schemas.events`), so a file accepts exactly what the Kafka topics accept.

- JSONL: one JSON object per line, with a ``kind`` field or a kind given by the caller
  (like a topic's kind); blank lines are skipped.
- CSV: a header row naming the JSON fields (``event_id``, ``occurred_at``, ``score``, ...);
  ``attributes.<name>`` columns make up an account event's attributes. An empty cell is an
  absent field (so CSV cannot clear an attribute with null). Cells of number fields are
  parsed as numbers, ``sla_breached`` as a boolean (true/false/1/0/yes/no), and attribute
  cells as a number or boolean when they read as one, else as text; id and text fields stay
  text, so account "42" stays the string the contract requires.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Iterator

from schemas.events import FIELDS, Event, InvalidEvent, decode_event, encode_event, event_from_dict, event_to_dict

__all__ = ["read_events", "read_jsonl", "read_csv", "write_jsonl", "write_csv"]

Line = tuple[int, Event | InvalidEvent]

_NUMBER_FIELDS = {f.name for specs in FIELDS.values() for f in specs if f.type == "number"}
_BOOLEAN_FIELDS = {f.name for specs in FIELDS.values() for f in specs if f.type == "boolean"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_ATTR = "attributes."


def read_events(path: str | Path, kind: str | None = None) -> Iterator[Line]:
    """Read a .csv file as CSV, anything else (.jsonl, .ndjson, .json) as JSON Lines."""
    path = Path(path)
    return read_csv(path, kind) if path.suffix.lower() == ".csv" else read_jsonl(path, kind)


def read_jsonl(path: str | Path, kind: str | None = None, *, max_bytes: int = 65536) -> Iterator[Line]:
    # Bytes, not text: a line that is not UTF-8 becomes one reported bad line, not a crash.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield number, decode_event(raw, kind, max_bytes=max_bytes)
            except InvalidEvent as exc:
                yield number, exc


def read_csv(path: str | Path, kind: str | None = None) -> Iterator[Line]:
    # surrogateescape: bytes that are not UTF-8 survive to be reported on their row.
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        line = reader.line_num  # a quoted cell may span lines: report where the row starts
        for row in reader:
            number, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                yield number, InvalidEvent("", f"at most {len(header)} cells (the header's columns)",
                                           f"message: expected at most {len(header)} cells, got {len(row)}")
                continue
            try:
                "".join(row).encode()
            except UnicodeEncodeError:
                yield number, InvalidEvent("", "UTF-8 text", "message: expected UTF-8 text, got bytes that are not UTF-8")
                continue
            try:
                yield number, event_from_dict(_row_to_dict(header, row), kind)
            except InvalidEvent as exc:
                yield number, exc


def _row_to_dict(header: list[str], row: list[str]) -> dict:
    data: dict = {}
    attrs: dict = {}
    for name, cell in zip(header, row):
        if cell == "" or not name:
            continue  # empty cell = absent field
        if name.startswith(_ATTR):
            attrs[name[len(_ATTR):]] = _scalar(cell)
        elif name in _NUMBER_FIELDS:
            data[name] = _number(cell)
        elif name in _BOOLEAN_FIELDS:
            low = cell.strip().lower()
            data[name] = True if low in _TRUE else False if low in _FALSE else cell
        else:
            data[name] = cell
    if attrs:
        data["attributes"] = attrs
    return data


def _number(cell: str):
    """int or float when the cell is one; else the text, for the decoder to name the field."""
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return cell


def _scalar(cell: str):
    low = cell.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    value = _number(cell)
    if isinstance(value, float) and not math.isfinite(value):
        return cell  # "nan"/"inf" are words here, not numbers the contract would refuse
    return value


def write_jsonl(events: Iterable[Event], path: str | Path) -> int:
    """Write events as JSON Lines (the topics' JSON form, with ``kind``); returns the count."""
    n = 0
    with open(path, "wb") as f:
        for event in events:
            f.write(encode_event(event))
            f.write(b"\n")
            n += 1
    return n


def write_csv(events: Iterable[Event], path: str | Path) -> int:
    """Write events as CSV with one column per field seen (``attributes.<name>`` for attributes).

    Holds the events in memory to know the columns; meant for small exports and fixtures.
    """
    rows = []
    columns: dict[str, None] = {}  # insertion-ordered set
    for event in events:
        d = event_to_dict(event)
        attrs = d.pop("attributes", None) or {}
        flat = {k: _cell(v) for k, v in d.items()}
        flat.update({_ATTR + k: _cell(v) for k, v in attrs.items() if v is not None})
        columns.update(dict.fromkeys(flat))
        rows.append(flat)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _cell(v) -> str:
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back as the same float
    return str(v)
