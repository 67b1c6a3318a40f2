"""Text from producers and operators, made safe to print.

Account ids, event names and model names come from outside. Printed raw, a newline or an ANSI
escape in one of them forges log lines or rewrites a terminal, so wherever such text reaches a
log, the CLI's output or a metric label it goes through `printable`.
"""
from __future__ import annotations


def printable(text: object, limit: int | None = None) -> str:
    """`text` with control characters (C0, DEL, C1, and other non-printable ones) escaped as Python
    does (\\n, \\x1b, \\u2028), cut after `limit` characters with '...'."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
