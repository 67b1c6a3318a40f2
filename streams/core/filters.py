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
