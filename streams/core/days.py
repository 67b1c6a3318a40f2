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


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm: the core imports no
    datetime, which also reads clocks)."""
    y = year - (month <= 2)
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def day_of_date(v: object) -> int | None:
    """The UTC day number of a date attribute: an ISO 8601 date ("2027-03-01", or a date and time, whose
    date is taken as written) or epoch seconds; None for anything else (missing data, not an error)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v // DAY) if -1e12 < v < 1e12 else None  # NaN fails both comparisons
    if not isinstance(v, str):
        return None
    s = v.strip()
    if len(s) < 10 or (len(s) > 10 and s[10] not in "Tt "):
        return None
    y, m, d = s[0:4], s[5:7], s[8:10]
    digits = y + m + d
    if s[4] != "-" or s[7] != "-" or not (digits.isascii() and digits.isdigit()):
        return None
    year, month, day = int(y), int(m), int(d)
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _MONTH_DAYS[month - 1]:
        return None
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return None
    return days_from_civil(year, month, day)
