"""Shared arithmetic of event time: day buckets, event fingerprints, fixed-point amounts.

Both the incremental state and the batch twin use these, so the two agree bit for bit.
"""
from __future__ import annotations

from binascii import b2a_base64
from hashlib import blake2b

DAY = 86400
HOUR = 3600
MILLI = 1000  # normalised CSAT answers are kept as integer thousandths
CENTI = 100  # usage values (minutes spent, ...) are kept as integer hundredths


def day_of(ts: float) -> int:
    """UTC day number of an epoch timestamp (floor(ts / 86400))."""
    return int(ts // DAY)


FINGERPRINT_CHARS = 8


def fingerprint(event_id: str) -> str:
    """Stable 48-bit fingerprint of an event id as 8 URL-safe base64 characters (blake2b;
    unlike hash() it is not salted, so it survives restarts). With ~100 fingerprints kept
    per account the chance that a new event collides with one of them is ~4e-13."""
    # == urlsafe_b64encode(digest).decode(), without the wrapper calls
    return b2a_base64(blake2b(event_id.encode(), digest_size=6).digest(), newline=False).translate(_URLSAFE).decode()


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def to_milli(x: float) -> int:
    """Fixed-point thousandths, so sums are exact and independent of order."""
    return int(round(x * MILLI))


def to_centi(x: float) -> int:
    """Fixed-point hundredths (usage values), so sums are exact and independent of order."""
    return int(round(x * CENTI))


MINUTES_PER_DAY = 1440


def minute_of(ts: float) -> int:
    """Ticket timestamps are kept at whole minutes (epoch minutes)."""
    return int(ts // 60)


def csat_milli(score: float, bottom: float, top: float) -> int:
    """A CSAT answer on bottom..top, mapped linearly onto 1..5, in thousandths."""
    if top <= bottom:
        return to_milli(5.0)
    x = min(max(score, bottom), top)
    return to_milli(1.0 + (x - bottom) * 4.0 / (top - bottom))


def nps_class(score: float, bottom: float, top: float) -> int:
    """0 = promoter (9-10), 1 = passive (7-8), 2 = detractor (0-6), on a 0..10 scale."""
    x = score if (bottom, top) == (0.0, 10.0) else (score - bottom) * 10.0 / (top - bottom)
    if x >= 9:
        return 0
    if x >= 7:
        return 1
    return 2
