"""Account filters (segments, component restrictions): pure functions of the account's
attributes and, for ``has``, of its measure values."""
from __future__ import annotations

from typing import Any, Callable, Mapping


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _eq(v: Any, arg: Any) -> bool:
    if isinstance(v, bool) or isinstance(arg, bool):
        return v is arg or v == arg and type(v) is type(arg)
    if isinstance(v, str) and isinstance(arg, str):
        return v.casefold() == arg.casefold()
    x, y = _num(v), _num(arg)
    if x is not None and y is not None and not isinstance(v, str) and not isinstance(arg, str):
        return x == y
    return str(v) == str(arg)


def compile_condition(c) -> Callable[[Mapping[str, Any], Callable[[str], float | None]], bool]:
    """One condition as ``(attributes, measure) -> bool``. A missing attribute fails every test but
    ``exists: false``, ``ne`` and ``not_in``; ``has`` holds when the measure has a value. The
    generated evaluation (codegen) tests a filter's conditions in order, stopping at the first
    that fails."""
    op, attr, arg = c.op, c.attribute, c.arg
    if op == "has":
        return lambda attributes, measure: measure(attr) is not None
    if op == "exists":
        return lambda attributes, measure: (attributes.get(attr) is not None) == arg
    if op == "eq":
        def test(attributes, measure):
            v = attributes.get(attr)
            return v is not None and _eq(v, arg)
    elif op == "ne":
        def test(attributes, measure):
            v = attributes.get(attr)
            return not (v is not None and _eq(v, arg))
    elif op == "in":
        def test(attributes, measure):
            v = attributes.get(attr)
            return v is not None and any(_eq(v, a) for a in arg)
    elif op == "not_in":
        def test(attributes, measure):
            v = attributes.get(attr)
            return not (v is not None and any(_eq(v, a) for a in arg))
    elif op == "gt":
        def test(attributes, measure):
            x = _num(attributes.get(attr))
            return x is not None and x > arg
    elif op == "gte":
        def test(attributes, measure):
            x = _num(attributes.get(attr))
            return x is not None and x >= arg
    elif op == "lt":
        def test(attributes, measure):
            x = _num(attributes.get(attr))
            return x is not None and x < arg
    elif op == "lte":
        def test(attributes, measure):
            x = _num(attributes.get(attr))
            return x is not None and x <= arg
    else:  # unknown test: never true
        def test(attributes, measure):
            return False
    return test
