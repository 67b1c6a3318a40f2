"""Generate the JSON Schema (draft 2020-12) files in ``schemas/`` for consumers in other languages.

    python -m schemas.generate          # (re)write every registered schema file
    python -m schemas.generate --check  # exit 1 and list the files that are out of date

The event schemas are built from ``schemas.events.FIELDS`` (the one declarative
description of the input events; the decoder is tested against it). Other record
types register the same way, in either of two ways:

- a module in the ``schemas`` package defines ``JSON_SCHEMAS = {"alert.schema.json":
  build_alert_schema}`` (values are dicts or zero-argument builders returning dicts);
  it is discovered here, so adding a record type needs no edit to this file;
- or code calls ``register_schema(filename, schema_or_builder)`` before ``main()``.

Output is deterministic (sorted keys, 2-space indent, trailing newline), so the files
are committed and ``tests/test_event_schemas.py`` fails when they are stale.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Callable, Mapping, Union

from schemas.events import FIELDS, LIMITS, SURVEY_SCALES, FieldSpec

SCHEMA_DIR = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"
# RFC 3339 date-time with a mandatory zone: what the decoder is guaranteed to accept.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"

SchemaSource = Union[dict, Callable[[], dict]]
SCHEMAS: dict[str, SchemaSource] = {}  # filename -> schema dict or builder


def register_schema(filename: str, schema: SchemaSource) -> None:
    """Register a schema file; a second registration of one name is a bug (two owners)."""
    if not filename.endswith(".schema.json"):
        raise ValueError(f"{filename}: schema files are named *.schema.json")
    if filename in SCHEMAS and SCHEMAS[filename] is not schema:
        raise ValueError(f"{filename}: registered twice")
    SCHEMAS[filename] = schema


# ------------------------------------------------------------ event schemas

_TITLES = {
    "usage": ("Usage event", "Product analytics (logins, sessions, features used). "
              "Default topic health.usage."),
    "ticket": ("Ticket event", "A support ticket lifecycle step from the ticketing / PSA "
               "system. Default topic health.tickets."),
    "survey": ("Survey event", "A CSAT or NPS answer. Default topic health.surveys."),
    "account": ("Account event", "An upsert of account attributes from the CRM (seats, plan, "
                "renewal date, CSM rating, ...). Default topic health.accounts."),
}


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x  # 5 rather than 5.0 in the files


def field_schema(spec: FieldSpec) -> dict:
    """The JSON Schema of one field; optional fields also accept null (same as absent)."""
    if spec.type == "enum":
        s = {"enum": list(spec.enum) + ([] if spec.required else [None])}
    else:
        bound = {} if spec.bound is None else {"minimum": -_num(spec.bound), "maximum": _num(spec.bound)}
        s = {
            "id": {"type": "string", "minLength": 1, "maxLength": LIMITS.id_chars},
            "string": {"type": "string", "minLength": 1, "maxLength": LIMITS.name_chars},
            "timestamp": {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN},
            "number": {"type": "number", **bound},  # JSON cannot carry NaN/Infinity, so finite
            "boolean": {"type": "boolean"},
            "attributes": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": LIMITS.attributes,
                "propertyNames": {"minLength": 1, "maxLength": LIMITS.name_chars},
                "additionalProperties": {"anyOf": [
                    {"type": "string", "maxLength": LIMITS.text_chars},
                    {"type": "number", **bound},
                    {"type": ["boolean", "null"]},
                ]},
            },
        }[spec.type]
        if not spec.required:
            s["type"] = [s["type"], "null"]
    s["description"] = spec.description
    return s


def _survey_rules() -> list[dict]:
    # Cross-field rules the decoder enforces; "score <= scale" for a custom csat
    # scale cannot be said in JSON Schema, so the score's description carries it.
    csat_lo, csat_top = SURVEY_SCALES["csat"]
    nps_lo, nps_top = SURVEY_SCALES["nps"]
    is_ = lambda survey: {"properties": {"survey": {"const": survey}}, "required": ["survey"]}
    return [
        {"if": is_("nps"), "then": {"properties": {
            "score": {"minimum": _num(nps_lo), "maximum": _num(nps_top)},
            "scale": {"enum": [_num(nps_top), None]}}}},
        {"if": is_("csat"), "then": {"properties": {
            "score": {"minimum": _num(csat_lo)},
            "scale": {"exclusiveMinimum": _num(csat_lo), "maximum": _num(LIMITS.max_csat_scale)}}}},
        {"if": {"properties": {"survey": {"const": "csat"}, "scale": {"type": "null"}},
                "required": ["survey"]},
         "then": {"properties": {"score": {"maximum": _num(csat_top)}}}},
    ]


def event_schema(kind: str) -> dict:
    title, description = _TITLES[kind]
    props = {spec.name: field_schema(spec) for spec in FIELDS[kind]}
    props["kind"] = {"const": kind, "description": "Optional; when present it must match the "
                                                   "kind of the topic the event arrives on."}
    schema = {
        "$schema": DIALECT,
        "title": title,
        "description": description + " Unknown extra fields are ignored (forward compatibility).",
        "type": "object",
        "properties": props,
        "required": [spec.name for spec in FIELDS[kind] if spec.required],
        "additionalProperties": True,
    }
    if kind == "survey":
        schema["allOf"] = _survey_rules()
    return schema


for _kind in FIELDS:
    register_schema(f"{_kind}-event.schema.json", lambda k=_kind: event_schema(k))


# ---------------------------------------------------------------- the files

def all_schemas() -> dict[str, dict]:
    """Every registered schema (plus JSON_SCHEMAS found in schemas.* modules), built."""
    import schemas

    found: dict[str, SchemaSource] = dict(SCHEMAS)
    for mod in pkgutil.iter_modules(schemas.__path__):
        if mod.name == "generate" or mod.name.startswith("_"):
            continue
        extra: Mapping[str, SchemaSource] = getattr(
            importlib.import_module(f"schemas.{mod.name}"), "JSON_SCHEMAS", {})
        for filename, source in extra.items():
            if filename in found and found[filename] is not source:
                raise ValueError(f"{filename}: registered twice (schemas.{mod.name})")
            found[filename] = source
    return {name: (src() if callable(src) else src) for name, src in sorted(found.items())}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from what would be generated."""
    stale = []
    for filename, schema in all_schemas().items():
        path = Path(directory) / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            stale.append(filename)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files (exit 1)")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = check(args.dir)
        for filename in stale:
            print(f"out of date: {filename} (run python -m schemas.generate)")
        return 1 if stale else 0
    for filename, schema in all_schemas().items():
        path = args.dir / filename
        text = render(schema)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    # Run the canonical module, not this __main__ copy, so registrations made by
    # other modules (into schemas.generate.SCHEMAS) are seen.
    from schemas.generate import main as _main

    sys.exit(_main())
