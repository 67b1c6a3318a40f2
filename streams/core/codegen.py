"""The evaluation of a model, generated once per model as straight-line Python.

A loop over a configuration's entries, looking measures up in a memo and calling one closure
per step, spends most of a rescore on interpretive overhead; :func:`generate` writes the
evaluation out as one function per model instead: the segment tests, every entry of every
configuration unrolled, each measure a local variable computed at most once (lazily, where it
is first needed), ``per_user`` measures inlined. The building blocks are the plan's own (the
compiled measures, scorings, filter conditions and the configuration's cached normalised
weights). The property tests compare it with the reference formulas kept in the tests.

The generated function is ``run(src, today, attrs, has_data, old, recompute, old_segment)`` ->
``(segment, score, band, coverage, rows, norm)``: rows are the positional ``[value, score]``
lists kept in ``pub`` (0 for a component not in the score), norm the configuration's
normalised weights for the rows' presence pattern. With ``old=None``: a full evaluation.
Otherwise (the engine's incremental mode) ``old`` holds the previous rows: a component outside
the ``recompute`` bit mask keeps its previous value and score, and its restriction is not
re-evaluated (its inputs did not change); when the segment is not ``old_segment`` everything
is recomputed.
"""
from __future__ import annotations

from math import fsum
from typing import Any, Callable

from .filters import compile_condition
from .measures import per_user_value
from .model import AccountFilter, HealthModel, band_of
from .scoring import MISSING_SCORES, step_points

_UNSET = object()


class _Writer:
    def __init__(self, plan, fns: dict[str, Callable]):
        self.plan = plan
        self.model: HealthModel = plan.model
        self.fns = fns
        self.ns: dict[str, Any] = {"_U": _UNSET, "fsum": fsum, "round": round, "_per_user": per_user_value,
                                   "BANDS": plan.bands, "N": len(plan.order),
                                   "MIN_COVERAGE": plan.model.min_coverage,
                                   "band_of": band_of}
        self.consts: dict[int, str] = {}
        self.measure_var: dict[str, str] = {}
        self.lines: list[str] = []

    def const(self, obj: Any, prefix: str) -> str:
        name = self.consts.get(id(obj))
        if name is None:
            name = self.consts[id(obj)] = f"{prefix}{len(self.consts)}"
            self.ns[name] = obj
        return name

    def var(self, measure: str) -> str:
        v = self.measure_var.get(measure)
        if v is None:
            v = self.measure_var[measure] = f"m{len(self.measure_var)}"
        return v

    def measure(self, name: str) -> str:
        """An expression giving the measure's value, computing it on first use."""
        m = self.model.measures[name]
        v = self.var(name)
        if m.type == "per_user":
            factor = self.const(100.0 if m.percent else 1.0, "K")
            expr = f"_per_user({self.measure(m.measure)}, {self.measure(m.per)}, {factor})"
        else:
            expr = f"{self.const(self.fns[name], 'F')}(src, today, attrs, None)"
        return f"({v} if {v} is not _U else ({v} := {expr}))"

    def condition(self, flt: AccountFilter | None) -> str:
        """An expression for the filter: every condition, in order, short-circuiting."""
        if flt is None:
            return "True"
        parts = []
        for c in flt.conditions:
            if c.op == "has":
                parts.append(f"({self.measure(c.attribute)} is not None)")
            else:
                parts.append(f"{self.const(compile_condition(c), 'C')}(attrs, None)")
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def score(self, comp, v: str, s: str, indent: int) -> None:
        """``s = the component's score of value v``: the scaled value clamped to 0..100 and rounded to 4
        decimals; for a missing value the policy's score (zero: 0, neutral: 50) or None (exclude)."""
        e = self.emit
        sc = comp.scoring
        if sc.type == "linear":
            points = f"({v} - {self.const(sc.worst, 'W')}) / {self.const(sc.best - sc.worst, 'SPAN')} * 100.0"
        elif sc.type == "max":
            points = f"{v} / {self.const(sc.max, 'TOP')} * 100.0"
        else:  # steps
            points = f"{self.const(step_points(sc), 'STEPS')}({v})"
        e(indent, f"if {v} is None:")
        e(indent + 1, f"{s} = {self.const(MISSING_SCORES.get(comp.missing), 'MISSING')}")
        e(indent, "else:")
        e(indent + 1, f"x = {points}")
        e(indent + 1, f"{s} = round(0.0 if x <= 0.0 else 100.0 if x >= 100.0 else x, 4)")

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def config(self, cfg, indent: int, incremental: bool) -> None:
        """The body evaluating one configuration (a _ConfigPlan), ending in a return. The
        incremental variant reuses the previous rows (``old``) outside ``recompute``; when the
        segment is not the previous one it hands over to the full evaluation."""
        e = self.emit
        if incremental:
            e(indent, f"if old_segment != {cfg.name!r}:")
            e(indent + 1, "return full(src, today, attrs, has_data)")
        codes = []
        for i, measure in cfg.entries:
            comp = self.plan.components[i]
            c, v, s, r = f"c{i}", f"v{i}", f"s{i}", f"r{i}"
            codes.append(c)
            e(indent, f"# {comp.name!r}")  # repr: names never reach the code unescaped
            inner = indent
            if incremental:
                e(indent, f"p = old[{i}]")
                e(indent, f"if not recompute & {1 << i}:  # unchanged inputs: as before")
                e(indent + 1, "if p:")
                e(indent + 2, f"{v} = p[0]; {s} = p[1]; {r} = p")
                e(indent + 2, f"{c} = 3 if {v} is not None else 2 if {s} is not None else 1")
                e(indent + 1, "else:")
                e(indent + 2, f"{c} = 0")
                e(indent, "else:")
                e(indent + 1, f"{r} = None")
                inner = indent + 1
            if comp.restrict_to is not None:
                e(inner, f"if not {self.condition(comp.restrict_to)}:")
                e(inner + 1, f"{c} = 0")
                e(inner, "else:")
                inner += 1
            e(inner, f"{v} = {self.measure(measure)}")
            self.score(comp, v, s, inner)
            e(inner, f"{c} = 3 if {v} is not None else 2 if {s} is not None else 1")
        n = len(codes)
        key = " | ".join(f"({c} << {2 * (n - 1 - j)})" for j, c in enumerate(codes)) or "0"
        e(indent, f"key = {key}")
        norm = self.const(cfg.norm, "NORM")
        e(indent, f"norm = {norm}.get(key)")
        e(indent, "if norm is None:")
        e(indent + 1, f"norm = {self.const(cfg, 'CFG')}.normalised(key, [{', '.join(codes)}])")
        e(indent, "positive, coverage, eff, rounded = norm")
        e(indent, "rows = [0] * N")
        e(indent, "parts = []")
        for i, _ in cfg.entries:
            c, v, s, r = f"c{i}", f"v{i}", f"s{i}", f"r{i}"
            e(indent, f"if {c}:")
            e(indent + 1, f"parts.append(eff[{i}] * {s} if {s} is not None else 0.0)")
            fresh = f"[None if {v} is None else round({v}, 4), {s}]"
            if incremental:
                e(indent + 1, f"rows[{i}] = {r} if {r} is not None else {fresh}")
            else:
                e(indent + 1, f"rows[{i}] = {fresh}")
        e(indent, "total = None")
        e(indent, "if has_data and positive:")
        e(indent + 1, "total = round(fsum(parts), 2)")
        e(indent + 1, "total = min(max(total, 0.0), 100.0)")
        # below the model's min_coverage a score gets no band: its status is insufficient_data
        e(indent, f"return {cfg.name!r}, total, band_of(BANDS, total) if coverage >= MIN_COVERAGE else None, "
                  f"coverage, rows, norm")

    def function(self, name: str, args: str, incremental: bool) -> str:
        plan = self.plan
        self.lines = []
        self.measure_var = {}
        for j, (seg, cfg) in enumerate(zip(self.model.segments, plan.segments)):
            self.emit(1, f"{'if' if j == 0 else 'elif'} {self.condition(seg.filter)}:")
            self.config(cfg, 2, incremental)
        if plan.segments:
            self.emit(1, "else:")
            self.config(plan.default, 2, incremental)
        else:
            self.config(plan.default, 1, incremental)
        head = [f"def {name}({args}):"]
        if self.measure_var:
            head.append("    " + " = ".join(self.measure_var.values()) + " = _U")
        return "\n".join(head + self.lines) + "\n"

    def build(self) -> Callable:
        source = (self.function("full", "src, today, attrs, has_data", False) + "\n\n"
                  + self.function("incremental", "src, today, attrs, has_data, old, recompute, old_segment", True)
                  + "\n\n"
                  + "def run(src, today, attrs, has_data, old, recompute, old_segment):\n"
                  + "    if old is None:\n"
                  + "        return full(src, today, attrs, has_data)\n"
                  + "    return incremental(src, today, attrs, has_data, old, recompute, old_segment)\n")
        code = compile(source, f"<health model {self.plan.fingerprint}>", "exec")
        exec(code, self.ns)
        run = self.ns["run"]
        run.source = source
        return run


def generate(plan, fns: dict[str, Callable]) -> Callable:
    """The generated evaluation function of a plan (see the module docstring)."""
    return _Writer(plan, fns).build()
