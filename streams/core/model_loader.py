"""Load and validate a health model file.

Every problem is reported with the file, the path to the field and what was expected;
all problems found are collected into one :class:`ModelError`.

A model comes from people and, through the control topic, from anything that can write to
it, so nothing in it is trusted: the YAML text is bounded (size, aliases, expanded nodes,
nesting, scalar length) before any Python object is built from it, every accepted key is
validated (names, texts, numbers and list lengths have the bounds of :data:`MODEL_LIMITS`),
and an accepted model is then built exactly as a worker builds it (the compiled plan of
:func:`streams.core.scoring.plan_of`, with its generated code and compiled measures): a
model this module accepts is one a worker can run.
"""
from __future__ import annotations

from types import MappingProxyType

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from yaml.events import (AliasEvent, DocumentStartEvent, MappingEndEvent, MappingStartEvent, ScalarEvent,
                         SequenceEndEvent, SequenceStartEvent)

from schemas.events import LIMITS as EVENT_LIMITS

from streams.text import printable

from .measures import MEASURE_TYPES, category_key
from .model import (
    DEFAULT_BANDS, IMPACTS, MISSING_POLICIES, INTERACTION_KINDS,
    AccountFilter, AlertRules, Band, BandChangeRule, Component, ComponentThreshold, Condition,
    LATE_KINDS, FallRule, HealthModel, Measure, ScoreConfig, ScoreThreshold, Scoring, Segment, StateConfig,
    TrendRule,
)

__all__ = ("MODEL_LIMITS", "ModelError", "ModelLimits", "load_model", "model_from_yaml", "parse_model")

_TOP_KEYS = ("version", "name", "description", "state", "measures", "components", "sections",
             "bands", "min_coverage", "segments", "alerts")
_FILTER_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists")
_DAY = 86400


@dataclass(frozen=True)
class ModelLimits:
    """Every bound the loader enforces (docs/health-model.md, "Limits", lists the same values).

    Generous for real models; low enough that a model at every maximum at once builds (the
    generated scoring code compiles) and scores an account in milliseconds, and that nothing
    in a model can make a worker parse, build or log without bound.
    """

    # the YAML text, checked before any Python object is built from it
    yaml_bytes: int = 256 * 1024  # size of the text (UTF-8 bytes)
    yaml_aliases: int = 50  # alias uses (*name, including merge keys <<: *name)
    yaml_nodes: int = 20_000  # scalars, sequences and mappings, every alias expanded
    yaml_depth: int = 12  # nesting of sequences and mappings (aliases expanded); a valid model needs 6
    yaml_scalar_chars: int = 2_000  # one scalar (key or value)
    # texts and names
    version_chars: int = 64
    model_name_chars: int = 200  # the top-level `name`
    description_chars: int = 2_000  # every `description`
    name_chars: int = EVENT_LIMITS.name_chars  # 100: measure, component, section, segment, band, colour,
    # event, feature, kind and attribute names (as long as an event's names may be)
    filter_text_chars: int = EVENT_LIMITS.text_chars  # 500: a filter's text value (an attribute's longest text)
    # how many
    measures: int = 200
    components: int = 100
    sections: int = 20
    segments: int = 50
    bands: int = 10
    thresholds: int = 20  # per steps scoring
    filter_conditions: int = 20  # per filter (restrict_to or a segment's filter), `has` names included
    filter_values: int = 200  # per in / not_in list
    expected_features: int = 500  # per feature_adoption measure
    events: int = 100  # event names per measure
    component_thresholds: int = 100  # alerts.component_thresholds
    # what the generated scoring code unrolls (its size, so the time to compile it: about 1 s at
    # both maximums together): every configuration (the default and each segment) scores its
    # components, each with its restriction's conditions, and each segment tests its filter
    scored_entries: int = 1_000  # components scored, summed over the configurations
    evaluated_conditions: int = 2_000  # restriction conditions of those entries + segment filter conditions
    # numbers (all finite)
    number_abs: float = 1e12  # |x| of linear worst/best, steps min, max, filter numbers, priority
    weight_max: float = 1e6  # component, section and segment-override weights
    max_future_skew_seconds: int = 7 * _DAY
    allowed_lateness_seconds: int = 14 * _DAY  # each kind's (a weekly sync, delivered a week late)
    category_values: int = 100  # a category measure's points and values
    retention_days: int = 400
    score_history_days: int = 400
    cooldown_seconds: float = 365 * _DAY  # alerts.cooldown_seconds and band_change.cooldown_seconds
    margin_points: float = 50.0  # alerts.band_change.margin_points
    drop_points: float = 100.0  # alerts.trend.drop_points (a score is 0..100)
    errors_reported: int = 200  # problems listed in one ModelError (then "... and N more")


MODEL_LIMITS = ModelLimits()
_L = MODEL_LIMITS


class ModelError(ValueError):
    """A health model that cannot be used. ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        shown = errors[:_L.errors_reported]
        if len(errors) > len(shown):
            shown = shown + [f"... and {len(errors) - len(shown)} more problems"]
        # an error line never carries a newline or an escape sequence, nor runs on for pages
        self.errors = [printable(f"{source}: {e}", 2_000) for e in shown]
        super().__init__("\n".join(self.errors))


def load_model(path: str | Path) -> HealthModel:
    """The model in a YAML file (see :func:`model_from_yaml`), the file's path as the source."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(_L.yaml_bytes + 1)  # never more: the file may be anything
            size = len(raw)
            if size > _L.yaml_bytes:
                try:
                    size = max(size, path.stat().st_size)
                except OSError:
                    pass
    except OSError as err:
        raise ModelError(source, [f"cannot read the file ({err.strerror or err})"]) from err
    if size > _L.yaml_bytes:
        raise ModelError(source, [_too_big(size)])
    return model_from_yaml(raw, source)


def model_from_yaml(text: str | bytes, source: str = "<string>") -> HealthModel:
    """The model in YAML ``text`` (a file's content, or a control message's), validated and built
    exactly as a worker builds it; raises :class:`ModelError` naming ``source`` otherwise.

    The text is bounded before any Python object is built from it (:data:`MODEL_LIMITS`: size,
    aliases, expanded nodes, nesting, scalar length, and the number of measures, components,
    sections, segments, bands and component thresholds), so no document, an alias bomb
    included, costs more than one pass of the YAML parser over at most ``yaml_bytes`` to refuse.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        if len(text) > _L.yaml_bytes:
            raise ModelError(source, [_too_big(len(text))])
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ModelError(source, [f"<yaml>: not UTF-8 text ({err})"]) from None
    if not isinstance(text, str):
        raise ModelError(source, [f"<yaml>: expected the model's YAML text, got {type(text).__name__}"])
    if len(text) > _L.yaml_bytes:  # (a character is at least one byte)
        raise ModelError(source, [_too_big(len(text))])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > _L.yaml_bytes:
        raise ModelError(source, [_too_big(size)])
    return parse_model(_read_yaml(text, source), source=source)


def _too_big(n: int) -> str:
    return f"<yaml>: {n} bytes; expected a model of at most {_L.yaml_bytes} bytes ({_L.yaml_bytes // 1024} KiB)"


_Loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader  # libyaml when available: 5x faster


def _yaml_error(err: Exception) -> str:
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"<yaml>: not valid YAML: {text}"


def _read_yaml(text: str, source: str) -> Any:
    """The document, built only after its event stream passed the budget of MODEL_LIMITS."""
    try:
        problems = _check_budget(text)
    except yaml.YAMLError as err:
        raise ModelError(source, [_yaml_error(err)]) from None
    if problems:
        raise ModelError(source, problems)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ModelError(source, [_yaml_error(err)]) from None
    except Exception as err:  # noqa: BLE001 - e.g. ValueError from an int scalar; never a crash
        raise ModelError(source, [f"<yaml>: not valid YAML: {type(err).__name__}: {err}"]) from None
    finally:
        loader.dispose()


# collections counted while the YAML is parsed: path -> (limit, what)
_COUNTED = MappingProxyType({
    "measures": (_L.measures, "measures"), "components": (_L.components, "components"),
    "sections": (_L.sections, "sections"), "segments": (_L.segments, "segments"), "bands": (_L.bands, "bands"),
    "alerts.component_thresholds": (_L.component_thresholds, "component thresholds"),
})
_LABELLED = MappingProxyType({"<root>": frozenset({"measures", "components", "sections", "segments", "bands", "alerts"}),
                               "alerts": frozenset({"component_thresholds"})})


class _Frame:
    __slots__ = ("anchor", "nodes", "height", "mapping", "label", "items", "expect_key", "key")

    def __init__(self, anchor, mapping: bool, label: str | None):
        self.anchor = anchor
        self.nodes = 1
        self.height = 1
        self.mapping = mapping
        self.label = label
        self.items = 0  # entries of a mapping, items of a sequence
        self.expect_key = True
        self.key = None  # the scalar key of the value being read


def _check_budget(text: str) -> list[str]:
    """The YAML limits ``text`` exceeds (empty: none), from one walk over the parser's events:
    no composition, no construction, no recursion, arithmetic saturated at the node budget. An
    alias counts as the size of what it stands for, so the expanded node count is exact however
    anchors nest. The entries of the top-level collections are counted too, so a model of 5,000
    components is reported as such. Undefined and recursive aliases raise YAMLError-like
    problems straight away."""
    cap = _L.yaml_nodes + 1
    loader = _Loader(text)
    problems: dict[str, str] = {}  # kind -> message (the first of each kind)
    try:
        sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes (saturated), height)
        stack: list[_Frame] = []
        open_anchors: set[str] = set()
        nodes = aliases = documents = 0

        def child(n: int, h: int, key: Any) -> None:
            """A node of ``n`` expanded nodes and height ``h`` completed inside the top frame."""
            if not stack:
                return
            top = stack[-1]
            top.nodes = min(top.nodes + n, cap)
            if h + 1 > top.height:
                top.height = h + 1
            if not top.mapping:
                top.items += 1
            elif top.expect_key:
                top.key, top.expect_key = key, False
                top.items += 1
            else:
                top.key, top.expect_key = None, True

        def label_of_new() -> str | None:
            if not stack:
                return "<root>"
            top = stack[-1]
            if top.mapping and not top.expect_key and top.label in _LABELLED \
                    and top.key in _LABELLED[top.label]:
                return top.key if top.label == "<root>" else f"{top.label}.{top.key}"
            return None

        while loader.check_event():
            ev = loader.get_event()
            if isinstance(ev, (MappingStartEvent, SequenceStartEvent)):
                nodes = min(nodes + 1, cap)
                frame = _Frame(ev.anchor, isinstance(ev, MappingStartEvent), label_of_new())
                stack.append(frame)
                if len(stack) > _L.yaml_depth and "depth" not in problems:
                    problems["depth"] = (f"<yaml>: nesting deeper than {_L.yaml_depth} levels (line {_line(ev)}); "
                                         f"expected at most {_L.yaml_depth} nested mappings and lists")
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
            elif isinstance(ev, (MappingEndEvent, SequenceEndEvent)):
                frame = stack.pop()
                if frame.anchor is not None:
                    sizes[frame.anchor] = (frame.nodes, frame.height)
                    open_anchors.discard(frame.anchor)
                if frame.label in _COUNTED:
                    limit, what = _COUNTED[frame.label]
                    if frame.items > limit:
                        problems[frame.label] = f"{frame.label}: {frame.items} {what}; expected at most {limit}"
                child(frame.nodes, frame.height, None)
            elif isinstance(ev, ScalarEvent):
                nodes = min(nodes + 1, cap)
                if len(ev.value) > _L.yaml_scalar_chars and "scalar" not in problems:
                    problems["scalar"] = (f"<yaml>: a scalar of {len(ev.value)} characters (line {_line(ev)}); "
                                          f"expected at most {_L.yaml_scalar_chars}")
                if ev.anchor is not None:
                    sizes[ev.anchor] = (1, 0)
                child(1, 0, ev.value if ev.tag is None else None)
            elif isinstance(ev, AliasEvent):
                aliases += 1
                if ev.anchor in open_anchors:
                    raise yaml.YAMLError(f"alias *{ev.anchor} inside its own anchor (line {_line(ev)}); "
                                         "expected no recursive structure")
                target = sizes.get(ev.anchor)
                if target is None:
                    raise yaml.YAMLError(f"undefined alias *{ev.anchor} (line {_line(ev)})")
                n, h = target
                nodes = min(nodes + n, cap)
                if len(stack) + h > _L.yaml_depth and "depth" not in problems:
                    problems["depth"] = (f"<yaml>: nesting deeper than {_L.yaml_depth} levels with alias "
                                         f"*{ev.anchor} expanded (line {_line(ev)}); expected at most {_L.yaml_depth}")
                child(n, h, None)
            elif isinstance(ev, DocumentStartEvent):
                documents += 1
                if documents > 1 and "documents" not in problems:
                    problems["documents"] = f"<yaml>: more than one YAML document (line {_line(ev)}); expected one"
            if nodes >= cap and "nodes" not in problems:
                problems["nodes"] = (f"<yaml>: more than {_L.yaml_nodes} YAML nodes with aliases expanded "
                                     f"(line {_line(ev)}); expected at most {_L.yaml_nodes}")
    finally:
        loader.dispose()
    if aliases > _L.yaml_aliases:
        problems["aliases"] = f"<yaml>: {aliases} aliases; expected at most {_L.yaml_aliases}"
    # the counts of the model first: they say what is wrong in the model's own terms
    order = list(_COUNTED) + ["aliases", "nodes", "depth", "scalar", "documents"]
    return [problems[k] for k in order if k in problems]


def _line(ev) -> int | str:
    mark = getattr(ev, "start_mark", None)
    return mark.line + 1 if mark is not None else "?"


def parse_model(data: Any, source: str = "<string>") -> HealthModel:
    """The model of an already parsed document (dicts and lists), validated and built as a
    worker builds it (see the module docstring)."""
    try:
        model = _Parser(source).model(data)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - a document the checks missed is refused, never a crash
        raise ModelError(source, [f"<root>: cannot read the model: {type(err).__name__}: {err}"]) from err
    _build(model, source)
    return model


def _build(model: HealthModel, source: str) -> None:
    """Build everything a worker builds for a model (the compiled plan: scorings, filters,
    measures, the generated code); any failure refuses the model."""
    from .scoring import plan_of  # scoring imports the model, not the loader

    try:
        plan_of(model)
    except Exception as err:  # noqa: BLE001 - RecursionError, MemoryError, SyntaxError, ValueError, ...
        raise ModelError(source, [f"<root>: cannot build the model: {type(err).__name__}: {err}"]) from err


def _is_num(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond the floats
        return False


def _fmt(v: Any, limit: int = 80) -> str:
    """A value as it appears in a message: short, whatever its size."""
    if isinstance(v, str):
        return repr(v) if len(v) <= limit else repr(v[:limit]) + f"... ({len(v)} characters)"
    if isinstance(v, int) and not isinstance(v, bool):  # orjson writes 64-bit integers only
        return str(v) if v.bit_length() <= 128 else f"an integer of {int(v.bit_length() * 0.30103) + 1} digits"
    if isinstance(v, (dict, list, tuple)) and len(v) > 20:
        return f"a {'mapping' if isinstance(v, dict) else 'list'} of {len(v)} items"
    try:
        text = orjson.dumps(v, default=str).decode()
    except Exception:  # noqa: BLE001 - non-string keys, nesting beyond orjson's limit, ...
        text = f"a {type(v).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


def _bound(x: float) -> str:
    """A bound in a message: 31536000, not 3.1536e+07; 1e+12 as such."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e10 else f"{x:g}"


def _seg(key: Any) -> str:
    """A mapping key as a segment of a field path (bounded; ModelError escapes control characters)."""
    k = key if isinstance(key, str) else _fmt(key)
    return k if len(k) <= _L.name_chars else k[:_L.name_chars] + "..."


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    # ---------------------------------------------------------- typed getters
    def mapping(self, v: Any, path: str) -> dict | None:
        if not isinstance(v, dict):
            self.err(path, f"expected a mapping, got {_fmt(v)}")
            return None
        return v

    def keys(self, d: dict, allowed: tuple[str, ...], path: str) -> None:
        for k in d:
            if k not in allowed or not isinstance(k, str):
                self.err(f"{path}.{_seg(k)}", f"unknown key (expected one of: {', '.join(allowed)})")

    def count(self, v: Any, limit: int, path: str, what: str) -> bool:
        """True when the list or mapping ``v`` has at most ``limit`` items (else an error)."""
        if isinstance(v, (list, dict, tuple)) and len(v) > limit:
            self.err(path, f"{len(v)} {what}; expected at most {limit}")
            return False
        return True

    def name(self, v: Any, path: str, what: str = "a name") -> str | None:
        """A name (of a measure, component, event, attribute, ...): a non-empty string of at most
        ``name_chars`` printable characters (names reach logs and metric labels)."""
        if not isinstance(v, str) or not v.strip():
            self.err(path, f"expected {what} (a non-empty string), got {_fmt(v)}")
        elif len(v) > _L.name_chars:
            self.err(path, f"expected {what} of at most {_L.name_chars} characters, got {len(v)} characters")
        elif not v.isprintable():
            self.err(path, f"expected {what} without control characters, got {_fmt(v)}")
        else:
            return v
        return None

    def text(self, d: dict, key: str, path: str, limit: int, printable: bool = False) -> str | None:
        """An optional free text (``description``, the model's ``name``): a string, bounded."""
        p = f"{path}.{key}" if path else key
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            self.err(p, f"expected a string of at most {limit} characters, got {_fmt(v)}")
        elif len(v) > limit:
            self.err(p, f"expected a string of at most {limit} characters, got {len(v)} characters")
        elif printable and not v.isprintable():
            self.err(p, f"expected a string without control characters, got {_fmt(v)}")
        else:
            return v
        return None

    def description(self, d: dict, path: str) -> None:
        self.text(d, "description", path, _L.description_chars)

    def string(self, d: dict, key: str, path: str, required: bool = True, default: str | None = None):
        """A required (or optional) name-like string field."""
        p = f"{path}.{key}" if path else key
        if key not in d or d[key] is None:
            if required:
                self.err(p, "missing required field (expected a string)")
            return default
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            self.err(p, f"expected a non-empty string, got {_fmt(v)}")
            return default
        v = self.name(v, p, "a name")
        return default if v is None else v

    def number(self, d: dict, key: str, path: str, required: bool = False, default: Any = None,
               minimum: float | None = None, maximum: float | None = None, integer: bool = False,
               positive: bool = False):
        p = f"{path}.{key}" if path else key
        if key not in d or d[key] is None:
            if required:
                self.err(p, f"missing required field (expected {'an integer' if integer else 'a number'})")
            return default
        v = d[key]
        if not _is_num(v) or (integer and not float(v).is_integer()):
            self.err(p, f"expected {'an integer' if integer else 'a number'}, got {_fmt(v)}")
            return default
        if minimum is not None and v < minimum:
            self.err(p, f"expected a number >= {_bound(minimum)}, got {_fmt(v)}")
            return default
        if positive and v <= 0:
            self.err(p, f"expected a number > 0, got {_fmt(v)}")
            return default
        if maximum is not None and v > maximum:
            self.err(p, f"expected a number <= {_bound(maximum)}, got {_fmt(v)}")
            return default
        return int(v) if integer else float(v)

    def bounded(self, d: dict, key: str, path: str, required: bool = False, default: Any = None,
                positive: bool = False):
        """A number of a scoring or a filter: finite, |x| <= number_abs."""
        return self.number(d, key, path, required=required, default=default, positive=positive,
                           minimum=None if positive else -_L.number_abs, maximum=_L.number_abs)

    def names(self, v: Any, path: str, limit: int, what: str = "names") -> tuple[str, ...] | None:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            self.err(path, f"expected a name or a non-empty list of names, got {_fmt(v)}")
            return None
        if not self.count(v, limit, path, what):
            return None
        n_err = len(self.errors)
        for i, x in enumerate(v):
            self.name(x, f"{path}[{i}]" if len(v) > 1 else path)
        return tuple(v) if len(self.errors) == n_err else None

    # ------------------------------------------------------------------ model
    def model(self, data: Any) -> HealthModel:
        if not isinstance(data, dict):
            raise ModelError(self.source, [f"<root>: expected a mapping with version, measures, components, got {_fmt(data)}"])
        self.sizes(data)
        self.keys(data, _TOP_KEYS, "<root>")
        version = data.get("version")
        if _is_num(version):  # `version: 1.2` in YAML is a float; accept it as text
            version = str(version)
        if not isinstance(version, str) or not version.strip():
            self.err("version", "missing required field (expected a string such as \"2024.1\")"
                     if version is None else f"expected a string, got {_fmt(version)}")
            version = "?"
        elif len(version) > _L.version_chars or not version.isprintable():
            self.err("version", f"expected a string of at most {_L.version_chars} printable characters, "
                     f"got {_fmt(version)}")
            version = "?"
        name = self.text(data, "name", "", _L.model_name_chars, printable=True)
        if name is not None and not name.strip():
            self.err("name", f"expected a non-empty string, got {_fmt(name)}")
        name = name if name and name.strip() else version
        self.description(data, "")
        state = self.state(data.get("state", {}))
        measures = self.measures(data.get("measures"), state)
        sections = self.sections(data.get("sections"))
        components = self.components(data.get("components"), measures, sections)
        bands = self.bands(data.get("bands"))
        min_coverage = self.number(data, "min_coverage", "", default=0.0, minimum=0, maximum=1)
        default = self.config("default", None, components, sections, "components")
        segments = self.segments(data.get("segments"), components, sections, measures)
        alerts = self.alerts(data.get("alerts"), components, state)
        if not self.errors:
            self.evaluation_size(default, segments, components)
        if self.errors:
            raise ModelError(self.source, self.errors)
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
        fingerprint = hashlib.sha256(canonical).hexdigest()[:16]
        return HealthModel(version=version, name=name, state=state, measures=measures,
                           components=components, sections=sections, bands=bands, default=default,
                           segments=segments, alerts=alerts, fingerprint=fingerprint, source=self.source,
                           min_coverage=min_coverage)

    def evaluation_size(self, default: ScoreConfig, segments: tuple[Segment, ...],
                        components: dict[str, Component]) -> None:
        """The two budgets of what a worker's generated code unrolls (see ModelLimits)."""
        configs = (default, *(s.config for s in segments))
        entries = sum(len(cfg.entries) for cfg in configs)
        restricted = {n: len(c.restrict_to.conditions) if c.restrict_to is not None else 0
                      for n, c in components.items()}
        conditions = (sum(restricted[n] for cfg in configs for n, _, _ in cfg.entries)
                      + sum(len(s.filter.conditions) for s in segments))
        if entries > _L.scored_entries:
            self.err("segments", f"{entries} scored components over {len(configs)} configurations (the default "
                     f"and each segment scores its components); expected at most {_L.scored_entries} "
                     "(fewer segments, or segments listing fewer components)")
        if conditions > _L.evaluated_conditions:
            self.err("segments" if segments else "components",
                     f"{conditions} filter conditions evaluated over {len(configs)} configurations (a "
                     "component's restrict_to in every configuration that scores it, and each segment's "
                     f"filter); expected at most {_L.evaluated_conditions}")

    def sizes(self, data: dict) -> None:
        """The counts of MODEL_LIMITS first: a model beyond them is refused on these lines alone
        (no per-item validation of thousands of items)."""
        checks = [("measures", _L.measures, "measures"), ("components", _L.components, "components"),
                  ("sections", _L.sections, "sections"), ("segments", _L.segments, "segments"),
                  ("bands", _L.bands, "bands")]
        for key, limit, what in checks:
            self.count(data.get(key), limit, key, what)
        alerts = data.get("alerts")
        if isinstance(alerts, dict):
            self.count(alerts.get("component_thresholds"), _L.component_thresholds,
                       "alerts.component_thresholds", "component thresholds")
        if self.errors:
            raise ModelError(self.source, self.errors)

    def state(self, v: Any) -> StateConfig:
        d = self.mapping(v if v is not None else {}, "state")
        if d is None:
            return StateConfig()
        self.keys(d, ("retention_days", "allowed_lateness_seconds", "max_future_skew_seconds",
                      "score_history_days"), "state")
        dflt = StateConfig()
        return StateConfig(
            retention_days=self.number(d, "retention_days", "state", default=dflt.retention_days,
                                       minimum=1, maximum=_L.retention_days, integer=True),
            lateness=self.lateness(d, dflt.lateness),
            max_future_skew_seconds=self.number(d, "max_future_skew_seconds", "state",
                                                default=dflt.max_future_skew_seconds, minimum=0,
                                                maximum=_L.max_future_skew_seconds, integer=True),
            score_history_days=self.number(d, "score_history_days", "state", default=dflt.score_history_days,
                                           minimum=1, maximum=_L.score_history_days, integer=True),
        )

    def lateness(self, d: dict, default: tuple[int, ...]) -> tuple[int, ...]:
        """state.allowed_lateness_seconds: one number for every kind, or kind -> seconds (others: the default)."""
        v = d.get("allowed_lateness_seconds")
        if not isinstance(v, dict):
            one = self.number(d, "allowed_lateness_seconds", "state", minimum=0,
                              maximum=_L.allowed_lateness_seconds, integer=True)
            return default if one is None else (one,) * len(LATE_KINDS)
        path = "state.allowed_lateness_seconds"
        self.keys(v, LATE_KINDS, path)
        return tuple(self.number(v, kind, path, default=dflt, minimum=0, maximum=_L.allowed_lateness_seconds,
                                 integer=True) for kind, dflt in zip(LATE_KINDS, default))

    # --------------------------------------------------------------- measures
    def measures(self, v: Any, state: StateConfig) -> dict[str, Measure]:
        if v is None:
            self.err("measures", "missing required field (expected a mapping of measure name -> definition)")
            return {}
        d = self.mapping(v, "measures")
        if not d:
            if d is not None:
                self.err("measures", "expected at least one measure")
            return {}
        out: dict[str, Measure] = {}
        names = sorted(k for k in d if isinstance(k, str))
        for name, spec in d.items():
            path = f"measures.{_seg(name)}"
            if self.name(name, path, "a measure name") is None:
                continue
            m = self.measure(name, spec, path, state)
            if m is not None:
                out[name] = m
        # references between measures
        for name, m in out.items():
            path = f"measures.{name}"
            for key in ("measure", "per", "of"):
                ref = getattr(m, key)
                if ref is None:
                    continue
                target = out.get(ref)
                if target is None:
                    if ref not in d:
                        self.err(f"{path}.{key}", f"unknown measure {_fmt(ref)} (expected one of: {', '.join(names)})")
                elif MEASURE_TYPES[target.type].composite:
                    self.err(f"{path}.{key}", f"measure {ref!r} is a {target.type}; expected a plain measure")
                elif key == "of":
                    if not MEASURE_TYPES[target.type].comparable:
                        self.err(f"{path}.of", f"measure {ref!r} is a {target.type}; expected one of: "
                                 f"{', '.join(t for t, mt in MEASURE_TYPES.items() if mt.comparable)}")
                    elif 2 * target.window_days > state.retention_days:
                        self.err(f"{path}.of", f"comparing two periods of {target.window_days} days needs "
                                 f"{2 * target.window_days} days of history but state.retention_days is "
                                 f"{state.retention_days} (expected window_days <= {state.retention_days // 2})")
        return out

    def measure(self, name: str, spec: Any, path: str, state: StateConfig) -> Measure | None:
        d = self.mapping(spec, path)
        if d is None:
            return None
        mtype = d.get("type")
        if not isinstance(mtype, str) or mtype not in MEASURE_TYPES:
            self.err(f"{path}.type", f"unknown measure type {_fmt(mtype)} (expected one of: {', '.join(MEASURE_TYPES)})"
                     if mtype is not None else f"missing required field (expected one of: {', '.join(MEASURE_TYPES)})")
            return None
        allowed, required = MEASURE_TYPES[mtype].params, MEASURE_TYPES[mtype].required
        self.keys(d, ("type", "description") + allowed, path)
        self.description(d, path)
        for key in required:
            if d.get(key) is None:
                self.err(f"{path}.{key}", f"missing required field for a {mtype} measure")
        n_err = len(self.errors)
        kw: dict[str, Any] = {}
        if "window_days" in allowed:
            w = self.number(d, "window_days", path, integer=True, minimum=1)
            if w is not None and w > state.retention_days:
                self.err(f"{path}.window_days", f"a window of {w} days is longer than the retained history "
                         f"(state.retention_days is {state.retention_days})")
            kw["window_days"] = w
        if "events" in allowed and d.get("events") is not None:
            kw["events"] = self.names(d["events"], f"{path}.events", _L.events, "event names")
        if d.get("kinds") is not None:
            kinds = self.names(d["kinds"], f"{path}.kinds", len(INTERACTION_KINDS), "kinds")
            for k in kinds or ():
                if k not in INTERACTION_KINDS:
                    self.err(f"{path}.kinds", f"unknown event kind {k!r} (expected some of: {', '.join(INTERACTION_KINDS)})")
            kw["kinds"] = kinds
        if mtype == "days_since" and sum(d.get(k) is not None for k in ("events", "kinds", "attribute")) > 1:
            self.err(path, "give one of events (usage event names), kinds or attribute (a date attribute)")
        if mtype == "category":
            kw["points"], kw["values"] = self.category_points(d, path)
        for key in ("measure", "per", "of", "attribute", "expected_count_attribute"):
            if key in allowed and d.get(key) is not None:
                kw[key] = self.string(d, key, path)
        if mtype == "per_user":
            p = d.get("percent", False)
            if not isinstance(p, bool):
                self.err(f"{path}.percent", f"expected true or false, got {_fmt(p)}")
            kw["percent"] = p is True
        if mtype == "feature_adoption":
            if d.get("expected_features") is not None:
                kw["expected_features"] = self.names(d["expected_features"], f"{path}.expected_features",
                                                     _L.expected_features, "expected features")
            if (d.get("expected_features") is None) == (d.get("expected_count_attribute") is None):
                self.err(path, "give exactly one of expected_features (a list) or expected_count_attribute")
        if len(self.errors) != n_err:
            return None
        return Measure(name=name, type=mtype, **kw)

    def category_points(self, d: dict, path: str) -> tuple[tuple | None, tuple | None]:
        """A category measure's points (value -> number, values matched trimmed and case-folded) and the
        values the model says the attribute takes, each of which must have points."""
        raw = d.get("points")
        if raw is None:
            return None, None
        points = self.mapping(raw, f"{path}.points")
        if points is None or not self.count(points, _L.category_values, f"{path}.points", "values"):
            return None, None
        if not points:
            self.err(f"{path}.points", "expected at least one value -> points")
        out: dict[str, float] = {}
        for value, _ in points.items():
            key = category_key(value)
            p = f"{path}.points.{_seg(value)}"
            if not key:
                self.err(f"{path}.points", f"expected values that are non-empty text, got {_fmt(value)}")
                continue
            if key in out:
                self.err(p, f"the value {key!r} is given twice (values are matched ignoring case)")
                continue
            n = self.bounded(points, value, f"{path}.points", required=True)
            if n is not None:
                out[key] = n
        values = None
        if d.get("values") is not None:
            values = self.names(d["values"], f"{path}.values", _L.category_values, "values")
            for v in values or ():
                if category_key(v) not in out and category_key(v):
                    self.err(f"{path}.points", f"no points for the value {v!r} (listed in values)")
        return tuple(sorted(out.items())), values

    # --------------------------------------------------------------- sections
    def sections(self, v: Any) -> dict[str, float]:
        if v is None:
            return {}
        d = self.mapping(v, "sections")
        if d is None:
            return {}
        out = {}
        for name, spec in d.items():
            path = f"sections.{_seg(name)}"
            if self.name(name, path, "a section name") is None:
                continue
            if _is_num(spec):
                spec = {"weight": spec}
            s = self.mapping(spec, path)
            if s is None:
                continue
            self.keys(s, ("weight", "description"), path)
            self.description(s, path)
            w = self.number(s, "weight", path, required=True, minimum=0, maximum=_L.weight_max)
            if w is not None:
                out[name] = w
        return out

    # ------------------------------------------------------------- components
    def weight(self, d: dict, path: str, default: float | None = 1.0) -> float | None:
        if "weight" in d and "impact" in d:
            self.err(path, "give either weight or impact, not both")
            return default
        if d.get("impact") is not None:
            imp = d["impact"]
            if not isinstance(imp, str) or imp not in IMPACTS:
                self.err(f"{path}.impact", f"unknown impact level {_fmt(imp)} (expected one of: {', '.join(IMPACTS)})")
                return default
            return IMPACTS[imp]
        return self.number(d, "weight", path, default=default, minimum=0, maximum=_L.weight_max)

    def components(self, v: Any, measures: dict[str, Measure], sections: dict[str, float]) -> dict[str, Component]:
        if v is None:
            self.err("components", "missing required field (expected a mapping of component name -> definition)")
            return {}
        d = self.mapping(v, "components")
        if not d:
            if d is not None:
                self.err("components", "expected at least one component")
            return {}
        out = {}
        measure_names = ", ".join(sorted(measures))
        for name, spec in d.items():
            path = f"components.{_seg(name)}"
            if self.name(name, path, "a component name") is None:
                continue
            c = self.mapping(spec, path)
            if c is None:
                continue
            self.keys(c, ("measure", "scoring", "weight", "impact", "missing", "bands", "restrict_to",
                          "section", "description"), path)
            self.description(c, path)
            n_err = len(self.errors)
            measure = self.string(c, "measure", path)
            if measure is not None and measure not in measures:
                self.err(f"{path}.measure", f"unknown measure {measure!r} (expected one of: {measure_names})")
            scoring = self.scoring(c.get("scoring"), f"{path}.scoring")
            weight = self.weight(c, path)
            missing = c.get("missing", "exclude")
            if not isinstance(missing, str) or missing not in MISSING_POLICIES:
                self.err(f"{path}.missing", f"unknown missing-data policy {_fmt(missing)} (expected one of: {', '.join(MISSING_POLICIES)})")
            bands = None
            if c.get("bands") is not None:
                b = self.mapping(c["bands"], f"{path}.bands")
                if b is not None:
                    self.keys(b, ("average", "good"), f"{path}.bands")
                    avg = self.number(b, "average", f"{path}.bands", required=True, minimum=0, maximum=100)
                    good = self.number(b, "good", f"{path}.bands", required=True, minimum=0, maximum=100)
                    if avg is not None and good is not None:
                        if avg >= good:
                            self.err(f"{path}.bands", f"expected average < good, got average {avg:g}, good {good:g}")
                        bands = (avg, good)
            restrict = None
            if c.get("restrict_to") is not None:
                restrict = self.filter(c["restrict_to"], f"{path}.restrict_to", measures)
            section = c.get("section")
            if sections:
                if section is None:
                    self.err(f"{path}.section", f"missing: sections are defined, so every component names one (expected one of: {', '.join(sections)})")
                elif not isinstance(section, str) or section not in sections:
                    self.err(f"{path}.section", f"unknown section {_fmt(section)} (expected one of: {', '.join(sections)})")
            elif section is not None:
                self.err(f"{path}.section", f"unknown section {_fmt(section)} (no sections are defined)")
            if len(self.errors) == n_err:
                out[name] = Component(name=name, measure=measure, scoring=scoring, weight=weight,
                                      missing=missing, bands=bands, restrict_to=restrict, section=section)
        return out

    def scoring(self, v: Any, path: str) -> Scoring | None:
        if v is None:
            self.err(path, "missing required field (expected {type: linear|steps|max, ...})")
            return None
        d = self.mapping(v, path)
        if d is None:
            return None
        stype = d.get("type")
        if stype == "linear":
            self.keys(d, ("type", "worst", "best"), path)
            worst = self.bounded(d, "worst", path, required=True)
            best = self.bounded(d, "best", path, required=True)
            if worst is not None and best is not None and worst == best:
                self.err(path, f"worst and best are both {worst:g}; expected different values (worst > best inverts)")
            return Scoring("linear", worst=worst, best=best)
        if stype == "steps":
            self.keys(d, ("type", "thresholds", "else"), path)
            raw = d.get("thresholds")
            if not isinstance(raw, list) or not raw:
                self.err(f"{path}.thresholds", f"expected a non-empty list of {{min, points}}, got {_fmt(raw)}")
                return None
            if not self.count(raw, _L.thresholds, f"{path}.thresholds", "thresholds"):
                return None
            steps = []
            for i, t in enumerate(raw):
                tp = f"{path}.thresholds[{i}]"
                t = self.mapping(t, tp)
                if t is None:
                    continue
                self.keys(t, ("min", "points"), tp)
                lo = self.bounded(t, "min", tp, required=True)
                pts = self.number(t, "points", tp, required=True, minimum=0, maximum=100)
                if lo is not None and pts is not None:
                    if steps and lo >= steps[-1][0]:
                        self.err(f"{tp}.min", f"thresholds not ordered: expected min < {steps[-1][0]:g} "
                                 f"(list them from the highest minimum down), got {lo:g}")
                    steps.append((lo, pts))
            otherwise = self.number(d, "else", path, default=0.0, minimum=0, maximum=100)
            return Scoring("steps", steps=tuple(steps), otherwise=otherwise)
        if stype == "max":
            self.keys(d, ("type", "max"), path)
            mx = self.bounded(d, "max", path, required=True, positive=True)
            return Scoring("max", max=mx)
        self.err(f"{path}.type", f"unknown scoring type {_fmt(stype)} (expected one of: linear, steps, max)")
        return None

    # ---------------------------------------------------------------- filters
    def filter_value(self, v: Any, path: str) -> bool:
        """A value an attribute is compared with: a text, a finite number or a boolean."""
        if isinstance(v, bool):
            return True
        if isinstance(v, str):
            if len(v) <= _L.filter_text_chars:
                return True
            self.err(path, f"expected a text of at most {_L.filter_text_chars} characters, got {len(v)} characters")
            return False
        if _is_num(v) and abs(v) <= _L.number_abs:
            return True
        self.err(path, f"expected a text, a number between -{_L.number_abs:g} and {_L.number_abs:g} or "
                 f"true/false, got {_fmt(v)}")
        return False

    def filter_values(self, v: list, path: str) -> tuple | None:
        if not self.count(v, _L.filter_values, path, "values"):
            return None
        ok = True
        for i, x in enumerate(v):
            ok = self.filter_value(x, f"{path}[{i}]") and ok
        return tuple(v) if ok else None

    def filter(self, v: Any, path: str, measures: dict[str, Measure]) -> AccountFilter | None:
        d = self.mapping(v, path)
        if d is None:
            return None
        if not self.count(d, _L.filter_conditions, path, "conditions"):
            return None
        conds = []
        for attr, test in d.items():
            p = f"{path}.{_seg(attr)}"
            if self.name(attr, p, "an attribute name") is None:
                continue
            if attr == "has":
                for m in self.names(test, p, _L.filter_conditions, "measure names") or ():
                    if m not in measures:
                        self.err(p, f"unknown measure {m!r} (expected one of: {', '.join(sorted(measures))})")
                    conds.append(Condition(m, "has", True))
            elif isinstance(test, list):
                values = self.filter_values(test, p)
                if values is not None:
                    conds.append(Condition(attr, "in", values))
            elif isinstance(test, dict):
                for op, arg in test.items():
                    if not isinstance(op, str) or op not in _FILTER_OPS:
                        self.err(f"{p}.{_seg(op)}", f"unknown filter test (expected one of: {', '.join(_FILTER_OPS)})")
                    elif op == "exists":
                        if not isinstance(arg, bool):
                            self.err(f"{p}.{op}", f"expected true or false, got {_fmt(arg)}")
                        else:
                            conds.append(Condition(attr, op, arg))
                    elif op in ("gt", "gte", "lt", "lte"):
                        if not _is_num(arg):
                            self.err(f"{p}.{op}", f"expected a number, got {_fmt(arg)}")
                        elif abs(arg) > _L.number_abs:
                            self.err(f"{p}.{op}", f"expected a number between -{_L.number_abs:g} and "
                                     f"{_L.number_abs:g}, got {_fmt(arg)}")
                        else:
                            conds.append(Condition(attr, op, arg))
                    elif op in ("in", "not_in"):
                        if not isinstance(arg, list):
                            self.err(f"{p}.{op}", f"expected a list, got {_fmt(arg)}")
                        else:
                            values = self.filter_values(arg, f"{p}.{op}")
                            if values is not None:
                                conds.append(Condition(attr, op, values))
                    elif self.filter_value(arg, f"{p}.{op}"):  # eq, ne
                        conds.append(Condition(attr, op, arg))
            elif self.filter_value(test, p):
                conds.append(Condition(attr, "eq", test))
        if len(conds) > _L.filter_conditions:
            self.err(path, f"{len(conds)} conditions; expected at most {_L.filter_conditions}")
        return AccountFilter(tuple(conds))

    # ------------------------------------------------------------------ bands
    def bands(self, v: Any) -> tuple[Band, ...]:
        if v is None:
            return DEFAULT_BANDS
        if not isinstance(v, list) or not v:
            self.err("bands", f"expected a non-empty list of {{name, colour, min}}, got {_fmt(v)}")
            return DEFAULT_BANDS
        out, seen_min, seen_name = [], {}, set()
        for i, b in enumerate(v):
            path = f"bands[{i}]"
            b = self.mapping(b, path)
            if b is None:
                continue
            self.keys(b, ("name", "colour", "color", "min"), path)
            name = self.string(b, "name", path)
            key = "colour" if "colour" in b else "color"
            colour = b.get(key, "grey")
            if not isinstance(colour, str):
                self.err(f"{path}.{key}", f"expected a string, got {_fmt(colour)}")
            elif self.name(colour, f"{path}.{key}", "a colour") is None:
                colour = None
            lo = self.number(b, "min", path, required=True, minimum=0, maximum=100)
            if name in seen_name:
                self.err(f"{path}.name", f"duplicate band name {name!r}")
            seen_name.add(name)
            if lo is not None:
                if lo in seen_min:
                    self.err(f"{path}.min", f"duplicate minimum {lo:g} (also bands[{seen_min[lo]}]); "
                             "expected distinct minimums")
                seen_min[lo] = i
            if name and lo is not None:
                out.append(Band(name, colour if isinstance(colour, str) else "grey", lo))
        if seen_min and 0 not in seen_min:
            self.err("bands", "no band has minimum 0 (expected one band with min: 0, so every score has a band)")
        return tuple(sorted(out, key=lambda b: -b.min)) or DEFAULT_BANDS

    # ---------------------------------------------------- score configurations
    def config(self, name: str, spec: dict | None, components: dict[str, Component],
               sections: dict[str, float], path: str) -> ScoreConfig:
        """The default configuration (spec None) or a segment's, with overrides applied."""
        section_weights = dict(sections)
        if spec is None:
            entries = [(c.name, c.weight, c.section) for c in components.values()]
        else:
            raw = spec.get("components")
            entries = []
            seen: set[str] = set()
            if raw is None:
                entries = [(c.name, c.weight, c.section) for c in components.values()]
            elif not self.count(raw, _L.components, f"{path}.components", "components"):
                pass
            elif isinstance(raw, list):
                for i, cname in enumerate(raw):
                    c = components.get(cname) if isinstance(cname, str) else None
                    if c is None:
                        self.err(f"{path}.components[{i}]", f"unknown component {_fmt(cname)} (expected one of: {', '.join(components)})")
                    elif cname in seen:
                        self.err(f"{path}.components[{i}]", f"duplicate component {cname!r} (expected each at most once)")
                    else:
                        seen.add(cname)
                        entries.append((c.name, c.weight, c.section))
            elif isinstance(raw, dict):
                for cname, override in raw.items():
                    c = components.get(cname) if isinstance(cname, str) else None
                    p = f"{path}.components.{_seg(cname)}"
                    if c is None:
                        self.err(p, f"unknown component {_fmt(cname)} (expected one of: {', '.join(components)})")
                        continue
                    w = c.weight
                    if override is not None:
                        if _is_num(override):
                            override = {"weight": override}
                        o = self.mapping(override, p)
                        if o is not None:
                            self.keys(o, ("weight", "impact"), p)
                            w = self.weight(o, p, default=c.weight)
                    entries.append((c.name, w, c.section))
            else:
                self.err(f"{path}.components", f"expected a list of component names or a mapping name -> weight, got {_fmt(raw)}")
            sw = spec.get("section_weights")
            if sw is not None:
                swd = self.mapping(sw, f"{path}.section_weights")
                if swd is not None and not self.count(swd, _L.sections, f"{path}.section_weights", "sections"):
                    swd = None
                for sname, w in (swd or {}).items():
                    p = f"{path}.section_weights.{_seg(sname)}"
                    if not isinstance(sname, str) or sname not in sections:
                        self.err(p, f"unknown section {_fmt(sname)} (expected one of: {', '.join(sections) or 'none defined'})")
                    elif not _is_num(w) or w < 0:
                        self.err(p, f"expected a number >= 0, got {_fmt(w)}")
                    elif w > _L.weight_max:
                        self.err(p, f"expected a number <= {_bound(_L.weight_max)}, got {_fmt(w)}")
                    else:
                        section_weights[sname] = float(w)
        entries.sort(key=lambda e: e[0])
        if components and not self._config_total(entries, section_weights):
            where = path if spec is not None else "components"
            self.err(where, f"all weights are zero in configuration {name!r}; expected at least one "
                     "component (and its section) with a weight > 0")
        return ScoreConfig(name=name, entries=tuple(entries), section_weights=section_weights)

    @staticmethod
    def _config_total(entries, section_weights) -> float:
        if not section_weights:
            return sum(w for _, w, _ in entries if w)
        total = 0.0
        for s, sw in section_weights.items():
            if sum(w for _, w, sec in entries if sec == s and w):
                total += sw
        return total

    def segments(self, v: Any, components, sections, measures) -> tuple[Segment, ...]:
        if v is None:
            return ()
        if not isinstance(v, list):
            self.err("segments", f"expected a list of segments, got {_fmt(v)}")
            return ()
        out, names = [], set()
        for i, s in enumerate(v):
            path = f"segments[{i}]"
            s = self.mapping(s, path)
            if s is None:
                continue
            self.keys(s, ("name", "priority", "filter", "components", "section_weights", "description"), path)
            self.description(s, path)
            name = self.string(s, "name", path)
            if name in names or name == "default":
                self.err(f"{path}.name", f"duplicate segment name {name!r}")
            names.add(name)
            prio = self.bounded(s, "priority", path, required=True)
            flt = self.filter(s.get("filter"), f"{path}.filter", measures) if "filter" in s else None
            if "filter" not in s:
                self.err(f"{path}.filter", "missing required field (expected a mapping of attribute -> test)")
            cfg = self.config(name or f"segment {i}", s, components, sections, path)
            if name and prio is not None and flt is not None:
                out.append(Segment(name, prio, flt, cfg))
        prios = [s.priority for s in out]
        if len(set(prios)) != len(prios):
            self.err("segments", "two segments share a priority; expected distinct priorities (the highest match wins)")
        return tuple(sorted(out, key=lambda s: -s.priority))

    # ----------------------------------------------------------------- alerts
    def alerts(self, v: Any, components, state: StateConfig) -> AlertRules:
        if v is None:
            return AlertRules()
        d = self.mapping(v, "alerts")
        if d is None:
            return AlertRules()
        self.keys(d, ("band_change", "trend", "component_thresholds", "score_threshold", "fall", "cooldown_seconds",
                      "history_horizon_hours"), "alerts")
        band_change = None
        if d.get("band_change") is not None:
            b = self.mapping(d["band_change"], "alerts.band_change")
            if b is not None:
                self.keys(b, ("margin_points", "cooldown_seconds"), "alerts.band_change")
                band_change = BandChangeRule(
                    margin_points=self.number(b, "margin_points", "alerts.band_change", default=3.0, minimum=0,
                                              maximum=_L.margin_points),
                    cooldown_seconds=self.number(b, "cooldown_seconds", "alerts.band_change", default=86400.0,
                                                 minimum=0, maximum=_L.cooldown_seconds))
        trend = None
        if d.get("trend") is not None:
            t = self.mapping(d["trend"], "alerts.trend")
            if t is not None:
                self.keys(t, ("days", "drop_points", "drop_percent"), "alerts.trend")
                days = self.number(t, "days", "alerts.trend", required=True, integer=True, minimum=1)
                if days is not None and days > state.score_history_days:
                    self.err("alerts.trend.days", f"comparing with the score {days} days ago needs "
                             f"state.score_history_days >= {days}, got {state.score_history_days}")
                pts = self.number(t, "drop_points", "alerts.trend", positive=True, maximum=_L.drop_points)
                pct = self.number(t, "drop_percent", "alerts.trend", positive=True, maximum=100)
                if pts is None and pct is None and "drop_points" not in t and "drop_percent" not in t:
                    self.err("alerts.trend", "expected drop_points or drop_percent (or both)")
                trend = TrendRule(days=days or 14, drop_points=pts, drop_percent=pct)
        thresholds = []
        raw = d.get("component_thresholds")
        if raw is not None:
            if not isinstance(raw, list):
                self.err("alerts.component_thresholds", f"expected a list of {{component, below}}, got {_fmt(raw)}")
            else:
                for i, t in enumerate(raw):
                    p = f"alerts.component_thresholds[{i}]"
                    t = self.mapping(t, p)
                    if t is None:
                        continue
                    self.keys(t, ("component", "below"), p)
                    comp = self.string(t, "component", p)
                    if comp is not None and comp not in components:
                        self.err(f"{p}.component", f"unknown component {comp!r} (expected one of: {', '.join(components)})")
                    below = self.number(t, "below", p, required=True, minimum=0, maximum=100)
                    if comp and below is not None:
                        thresholds.append(ComponentThreshold(comp, below))
        score_threshold = None
        if d.get("score_threshold") is not None:
            t = self.mapping(d["score_threshold"], "alerts.score_threshold")
            if t is not None:
                self.keys(t, ("below", "margin_points"), "alerts.score_threshold")
                below = self.number(t, "below", "alerts.score_threshold", required=True, minimum=0, maximum=100)
                margin = self.number(t, "margin_points", "alerts.score_threshold", default=3.0, minimum=0,
                                     maximum=_L.margin_points)
                if below is not None:
                    score_threshold = ScoreThreshold(below, margin)
        fall = None
        if d.get("fall") is not None:
            f = self.mapping(d["fall"], "alerts.fall")
            if f is not None:
                self.keys(f, ("points", "days"), "alerts.fall")
                pts = self.number(f, "points", "alerts.fall", required=True, positive=True, maximum=_L.drop_points)
                days = self.number(f, "days", "alerts.fall", required=True, integer=True, minimum=1)
                if days is not None and days > state.score_history_days:
                    self.err("alerts.fall.days", f"looking {days} days back needs state.score_history_days >= "
                             f"{days}, got {state.score_history_days}")
                if pts is not None and days is not None:
                    fall = FallRule(pts, days)
        cooldown = self.number(d, "cooldown_seconds", "alerts", default=86400.0, minimum=0, maximum=_L.cooldown_seconds)
        # at least an hour: a sync or a consumer a few minutes behind is not history
        horizon = self.number(d, "history_horizon_hours", "alerts", default=24.0, minimum=1,
                              maximum=_L.cooldown_seconds / 3600)
        return AlertRules(band_change=band_change, trend=trend, component_thresholds=tuple(thresholds),
                          cooldown_seconds=cooldown, history_horizon_seconds=horizon * 3600,
                          score_threshold=score_threshold, fall=fall)
