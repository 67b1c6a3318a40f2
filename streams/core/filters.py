"""Account filters (segments, component restrictions): pure functions of the account's
attributes and, for ``has``, of its measure values."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .model import AccountFilter


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def matches(flt: AccountFilter | None, attributes: Mapping[str, Any],
            measure: Callable[[str], float | None]) -> bool:
    """True when every condition holds. A missing attribute fails every test but
    ``exists: false``, ``ne`` and ``not_in``."""
    if flt is None:
        return True
    for c in flt.conditions:
        op = c.op
        if op == "has":
            if measure(c.attribute) is None:
                return False
            continue
        v = attributes.get(c.attribute)
        if op == "exists":
            if (v is not None) != c.arg:
                return False
        elif op == "eq":
            if v is None or not _eq(v, c.arg):
                return False
        elif op == "ne":
            if v is not None and _eq(v, c.arg):
                return False
        elif op == "in":
            if v is None or not any(_eq(v, a) for a in c.arg):
                return False
        elif op == "not_in":
            if v is not None and any(_eq(v, a) for a in c.arg):
                return False
        else:
            x = _num(v)
            if x is None:
                return False
            a = c.arg
            if not ((op == "gt" and x > a) or (op == "gte" and x >= a)
                    or (op == "lt" and x < a) or (op == "lte" and x <= a)):
                return False
    return True


def _eq(v: Any, arg: Any) -> bool:
    if isinstance(v, bool) or isinstance(arg, bool):
        return v is arg or v == arg and type(v) is type(arg)
    if isinstance(v, str) and isinstance(arg, str):
        return v.casefold() == arg.casefold()
    x, y = _num(v), _num(arg)
    if x is not None and y is not None and not isinstance(v, str) and not isinstance(arg, str):
        return x == y
    return str(v) == str(arg)


# ------------------------------------------------------------------ compiled form
def _compile_condition(c) -> Callable[[Mapping[str, Any], Callable[[str], float | None]], bool]:
    """One condition as a closure with exactly the semantics of :func:`matches`."""
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
    else:  # unknown test: never true (as in matches)
        def test(attributes, measure):
            return False
    return test


def compile_filter(flt: AccountFilter | None) -> Callable[[Mapping[str, Any], Callable[[str], float | None]], bool] | None:
    """The filter as one predicate ``(attributes, measure) -> bool`` (None: no filter, always
    true), equivalent to ``matches(flt, attributes, measure)``: same conditions, same order,
    the first failing condition stops the evaluation (so a ``has`` after a failing test is
    not computed, as in :func:`matches`)."""
    if flt is None:
        return None
    tests = tuple(_compile_condition(c) for c in flt.conditions)
    if not tests:
        return lambda attributes, measure: True
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        t1, t2 = tests
        return lambda attributes, measure: t1(attributes, measure) and t2(attributes, measure)

    def all_of(attributes, measure):
        for t in tests:
            if not t(attributes, measure):
                return False
        return True
    return all_of
