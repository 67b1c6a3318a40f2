"""Load and validate a health model file.

Every problem is reported with the file, the path to the field and what was expected;
all problems found are collected into one :class:`ModelError`.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import orjson
import yaml

from .model import (
    DEFAULT_BANDS, IMPACTS, MEASURE_TYPES, MISSING_POLICIES, INTERACTION_KINDS,
    AccountFilter, AlertRules, Band, BandChangeRule, Component, ComponentThreshold, Condition,
    HealthModel, Measure, ScoreConfig, Scoring, Segment, StateConfig, TrendRule,
)

__all__ = ["ModelError", "load_model", "parse_model"]

_TOP_KEYS = ("version", "name", "description", "state", "measures", "components", "sections",
             "bands", "segments", "alerts")
_WINDOWED = ("event_count", "value_sum")  # what pct_change can compare
_COMPOSITE = ("per_user", "pct_change")
_FILTER_OPS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists")


class ModelError(ValueError):
    """A health model that cannot be used. ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = [f"{source}: {e}" for e in errors]
        super().__init__("\n".join(self.errors))


def load_model(path: str | Path) -> HealthModel:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ModelError(str(path), [f"cannot read the file ({err.strerror or err})"]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ModelError(str(path), [f"not valid YAML: {err}"]) from err
    return parse_model(data, source=str(path))


def parse_model(data: Any, source: str = "<string>") -> HealthModel:
    return _Parser(source).model(data)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else orjson.dumps(v, default=str).decode()


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
            if k not in allowed:
                self.err(f"{path}.{k}", f"unknown key (expected one of: {', '.join(allowed)})")

    def string(self, d: dict, key: str, path: str, required: bool = True, default: str | None = None):
        if key not in d or d[key] is None:
            if required:
                self.err(f"{path}.{key}" if path else key, "missing required field (expected a string)")
            return default
        v = d[key]
        if not isinstance(v, str) or not v.strip():
            self.err(f"{path}.{key}" if path else key, f"expected a non-empty string, got {_fmt(v)}")
            return default
        return v

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
            self.err(p, f"expected a number >= {minimum:g}, got {_fmt(v)}")
            return default
        if positive and v <= 0:
            self.err(p, f"expected a number > 0, got {_fmt(v)}")
            return default
        if maximum is not None and v > maximum:
            self.err(p, f"expected a number <= {maximum:g}, got {_fmt(v)}")
            return default
        return int(v) if integer else float(v)

    def names(self, v: Any, path: str) -> tuple[str, ...] | None:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            self.err(path, f"expected a name or a non-empty list of names, got {_fmt(v)}")
            return None
        return tuple(v)

    # ------------------------------------------------------------------ model
    def model(self, data: Any) -> HealthModel:
        if not isinstance(data, dict):
            raise ModelError(self.source, [f"<root>: expected a mapping with version, measures, components, got {_fmt(data)}"])
        self.keys(data, _TOP_KEYS, "<root>")
        version = data.get("version")
        if _is_num(version):  # `version: 1.2` in YAML is a float; accept it as text
            version = str(version)
        if not isinstance(version, str) or not version.strip():
            self.err("version", "missing required field (expected a string such as \"2024.1\")"
                     if version is None else f"expected a string, got {_fmt(version)}")
            version = "?"
        name = self.string(data, "name", "", required=False, default=version)
        state = self.state(data.get("state", {}))
        measures = self.measures(data.get("measures"), state)
        sections = self.sections(data.get("sections"))
        components = self.components(data.get("components"), measures, sections)
        bands = self.bands(data.get("bands"))
        default = self.config("default", None, components, sections, "components")
        segments = self.segments(data.get("segments"), components, sections, measures)
        alerts = self.alerts(data.get("alerts"), components, state)
        if self.errors:
            raise ModelError(self.source, self.errors)
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
        fingerprint = hashlib.sha256(canonical).hexdigest()[:16]
        return HealthModel(version=version, name=name, state=state, measures=measures,
                           components=components, sections=sections, bands=bands, default=default,
                           segments=segments, alerts=alerts, fingerprint=fingerprint, source=self.source)

    def state(self, v: Any) -> StateConfig:
        d = self.mapping(v if v is not None else {}, "state")
        if d is None:
            return StateConfig()
        self.keys(d, ("retention_days", "allowed_lateness_seconds", "max_future_skew_seconds",
                      "score_history_days"), "state")
        dflt = StateConfig()
        return StateConfig(
            retention_days=self.number(d, "retention_days", "state", default=dflt.retention_days,
                                       minimum=1, maximum=400, integer=True),
            allowed_lateness_seconds=self.number(d, "allowed_lateness_seconds", "state",
                                                 default=dflt.allowed_lateness_seconds, minimum=0,
                                                 maximum=7 * 86400, integer=True),
            max_future_skew_seconds=self.number(d, "max_future_skew_seconds", "state",
                                                default=dflt.max_future_skew_seconds, minimum=0, integer=True),
            score_history_days=self.number(d, "score_history_days", "state", default=dflt.score_history_days,
                                           minimum=1, maximum=400, integer=True),
        )

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
        for name, spec in d.items():
            m = self.measure(str(name), spec, f"measures.{name}", state)
            if m is not None:
                out[str(name)] = m
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
                        self.err(f"{path}.{key}", f"unknown measure {ref!r} (expected one of: {', '.join(sorted(d))})")
                elif target.type in _COMPOSITE:
                    self.err(f"{path}.{key}", f"measure {ref!r} is a {target.type}; expected a plain measure")
                elif key == "of":
                    if target.type not in _WINDOWED:
                        self.err(f"{path}.of", f"measure {ref!r} is a {target.type}; expected an event_count or value_sum measure")
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
        if mtype not in MEASURE_TYPES:
            self.err(f"{path}.type", f"unknown measure type {_fmt(mtype)} (expected one of: {', '.join(MEASURE_TYPES)})"
                     if mtype is not None else f"missing required field (expected one of: {', '.join(MEASURE_TYPES)})")
            return None
        allowed, required = MEASURE_TYPES[mtype]
        self.keys(d, ("type", "description") + allowed, path)
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
            kw["events"] = self.names(d["events"], f"{path}.events")
        if d.get("kinds") is not None:
            kinds = self.names(d["kinds"], f"{path}.kinds")
            for k in kinds or ():
                if k not in INTERACTION_KINDS:
                    self.err(f"{path}.kinds", f"unknown event kind {k!r} (expected some of: {', '.join(INTERACTION_KINDS)})")
            kw["kinds"] = kinds
        if mtype == "days_since" and d.get("events") is not None and d.get("kinds") is not None:
            self.err(path, "give either events (usage event names) or kinds, not both")
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
                kw["expected_features"] = self.names(d["expected_features"], f"{path}.expected_features")
            if (d.get("expected_features") is None) == (d.get("expected_count_attribute") is None):
                self.err(path, "give exactly one of expected_features (a list) or expected_count_attribute")
        if len(self.errors) != n_err:
            return None
        return Measure(name=name, type=mtype, **kw)

    # --------------------------------------------------------------- sections
    def sections(self, v: Any) -> dict[str, float]:
        if v is None:
            return {}
        d = self.mapping(v, "sections")
        if d is None:
            return {}
        out = {}
        for name, spec in d.items():
            path = f"sections.{name}"
            if _is_num(spec):
                spec = {"weight": spec}
            s = self.mapping(spec, path)
            if s is None:
                continue
            self.keys(s, ("weight", "description"), path)
            w = self.number(s, "weight", path, required=True, minimum=0)
            if w is not None:
                out[str(name)] = w
        return out

    # ------------------------------------------------------------- components
    def weight(self, d: dict, path: str, default: float | None = 1.0) -> float | None:
        if "weight" in d and "impact" in d:
            self.err(path, "give either weight or impact, not both")
            return default
        if d.get("impact") is not None:
            imp = d["impact"]
            if imp not in IMPACTS:
                self.err(f"{path}.impact", f"unknown impact level {_fmt(imp)} (expected one of: {', '.join(IMPACTS)})")
                return default
            return IMPACTS[imp]
        return self.number(d, "weight", path, default=default, minimum=0)

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
        for name, spec in d.items():
            name = str(name)
            path = f"components.{name}"
            c = self.mapping(spec, path)
            if c is None:
                continue
            self.keys(c, ("measure", "scoring", "weight", "impact", "missing", "bands", "restrict_to",
                          "section", "description"), path)
            n_err = len(self.errors)
            measure = self.string(c, "measure", path)
            if measure is not None and measure not in measures:
                self.err(f"{path}.measure", f"unknown measure {measure!r} (expected one of: {', '.join(sorted(measures))})")
            scoring = self.scoring(c.get("scoring"), f"{path}.scoring")
            weight = self.weight(c, path)
            missing = c.get("missing", "exclude")
            if missing not in MISSING_POLICIES:
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
                elif section not in sections:
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
            worst = self.number(d, "worst", path, required=True)
            best = self.number(d, "best", path, required=True)
            if worst is not None and best is not None and worst == best:
                self.err(path, f"worst and best are both {worst:g}; expected different values (worst > best inverts)")
            return Scoring("linear", worst=worst, best=best)
        if stype == "steps":
            self.keys(d, ("type", "thresholds", "else"), path)
            raw = d.get("thresholds")
            if not isinstance(raw, list) or not raw:
                self.err(f"{path}.thresholds", f"expected a non-empty list of {{min, points}}, got {_fmt(raw)}")
                return None
            steps = []
            for i, t in enumerate(raw):
                tp = f"{path}.thresholds[{i}]"
                t = self.mapping(t, tp)
                if t is None:
                    continue
                self.keys(t, ("min", "points"), tp)
                lo = self.number(t, "min", tp, required=True)
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
            mx = self.number(d, "max", path, required=True, positive=True)
            return Scoring("max", max=mx)
        self.err(f"{path}.type", f"unknown scoring type {_fmt(stype)} (expected one of: linear, steps, max)")
        return None

    # ---------------------------------------------------------------- filters
    def filter(self, v: Any, path: str, measures: dict[str, Measure]) -> AccountFilter | None:
        d = self.mapping(v, path)
        if d is None:
            return None
        conds = []
        for attr, test in d.items():
            attr = str(attr)
            p = f"{path}.{attr}"
            if attr == "has":
                for m in self.names(test, p) or ():
                    if m not in measures:
                        self.err(p, f"unknown measure {m!r} (expected one of: {', '.join(sorted(measures))})")
                    conds.append(Condition(m, "has", True))
            elif isinstance(test, list):
                conds.append(Condition(attr, "in", tuple(test)))
            elif isinstance(test, dict):
                for op, arg in test.items():
                    if op not in _FILTER_OPS:
                        self.err(f"{p}.{op}", f"unknown filter test (expected one of: {', '.join(_FILTER_OPS)})")
                    elif op == "exists" and not isinstance(arg, bool):
                        self.err(f"{p}.{op}", f"expected true or false, got {_fmt(arg)}")
                    elif op in ("gt", "gte", "lt", "lte") and not _is_num(arg):
                        self.err(f"{p}.{op}", f"expected a number, got {_fmt(arg)}")
                    elif op in ("in", "not_in") and not isinstance(arg, list):
                        self.err(f"{p}.{op}", f"expected a list, got {_fmt(arg)}")
                    else:
                        conds.append(Condition(attr, op, tuple(arg) if isinstance(arg, list) else arg))
            else:
                conds.append(Condition(attr, "eq", test))
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
            colour = b.get("colour", b.get("color", "grey"))
            if not isinstance(colour, str):
                self.err(f"{path}.colour", f"expected a string, got {_fmt(colour)}")
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
            if raw is None:
                entries = [(c.name, c.weight, c.section) for c in components.values()]
            elif isinstance(raw, list):
                for i, cname in enumerate(raw):
                    c = components.get(cname)
                    if c is None:
                        self.err(f"{path}.components[{i}]", f"unknown component {_fmt(cname)} (expected one of: {', '.join(components)})")
                    else:
                        entries.append((c.name, c.weight, c.section))
            elif isinstance(raw, dict):
                for cname, override in raw.items():
                    c = components.get(cname)
                    p = f"{path}.components.{cname}"
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
                for sname, w in (swd or {}).items():
                    p = f"{path}.section_weights.{sname}"
                    if sname not in sections:
                        self.err(p, f"unknown section {_fmt(sname)} (expected one of: {', '.join(sections) or 'none defined'})")
                    elif not _is_num(w) or w < 0:
                        self.err(p, f"expected a number >= 0, got {_fmt(w)}")
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
            name = self.string(s, "name", path)
            if name in names or name == "default":
                self.err(f"{path}.name", f"duplicate segment name {name!r}")
            names.add(name)
            prio = self.number(s, "priority", path, required=True)
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
        self.keys(d, ("band_change", "trend", "component_thresholds", "cooldown_seconds"), "alerts")
        band_change = None
        if d.get("band_change") is not None:
            b = self.mapping(d["band_change"], "alerts.band_change")
            if b is not None:
                self.keys(b, ("margin_points", "cooldown_seconds"), "alerts.band_change")
                band_change = BandChangeRule(
                    margin_points=self.number(b, "margin_points", "alerts.band_change", default=3.0, minimum=0, maximum=50),
                    cooldown_seconds=self.number(b, "cooldown_seconds", "alerts.band_change", default=86400.0, minimum=0))
        trend = None
        if d.get("trend") is not None:
            t = self.mapping(d["trend"], "alerts.trend")
            if t is not None:
                self.keys(t, ("days", "drop_points", "drop_percent"), "alerts.trend")
                days = self.number(t, "days", "alerts.trend", required=True, integer=True, minimum=1)
                if days is not None and days > state.score_history_days:
                    self.err("alerts.trend.days", f"comparing with the score {days} days ago needs "
                             f"state.score_history_days >= {days}, got {state.score_history_days}")
                pts = self.number(t, "drop_points", "alerts.trend", positive=True)
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
        cooldown = self.number(d, "cooldown_seconds", "alerts", default=86400.0, minimum=0)
        return AlertRules(band_change=band_change, trend=trend, component_thresholds=tuple(thresholds),
                          cooldown_seconds=cooldown)
