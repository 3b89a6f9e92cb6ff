"""Durations as commands and settings spell them: ``90d``, ``12h``, ``30min``, ``6mo``.

One spelling per unit, so that none can be read two ways: ``s`` seconds, ``min``
minutes, ``h`` hours, ``d`` days, ``w`` weeks, ``mo`` months of 30 days. ``m`` alone is
refused: it means minutes to some and months to others.
"""

from __future__ import annotations

import datetime
import re

UNITS = {
    "s": datetime.timedelta(seconds=1),
    "min": datetime.timedelta(minutes=1),
    "h": datetime.timedelta(hours=1),
    "d": datetime.timedelta(days=1),
    "w": datetime.timedelta(weeks=1),
    "mo": datetime.timedelta(days=30),
}
#: Durations beyond this reach before year 1 on some dates: refused rather than overflowing.
MAX_DURATION = datetime.timedelta(days=365_000)
_DURATION = re.compile(r"(\d+)\s*([a-z]+)")
SPELLINGS = "s, min, h, d, w or mo (30 days)"


def parse_duration(value: object, what: str = "a duration") -> datetime.timedelta:
    """``value`` (e.g. ``"90d"``) as a timedelta; ValueError saying what is wrong."""
    match = _DURATION.fullmatch(value.strip().lower()) if isinstance(value, str) and len(value) < 10_000 else None
    shown = repr(value) if not isinstance(value, str) or len(value) < 40 else repr(value[:40] + "...")
    if match is None or match.group(2) not in UNITS:
        hint = " ('m' could be minutes or months: write 'min' or 'mo')" if match and match.group(2) == "m" else ""
        raise ValueError(f"{what} takes a number and a unit ({SPELLINGS}), like 90d; not {shown}{hint}")
    digits = match.group(1).lstrip("0")
    if not digits:
        raise ValueError(f"{what} takes a number and a unit, more than zero, like 90d; not {shown}")
    # Past 12 digits no unit stays within 1000 years (and int() of huge digit strings is slow).
    try:
        duration = int(digits) * UNITS[match.group(2)] if len(digits) <= 12 else None
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        raise ValueError(f"{what} reaches back more than 1000 years: {shown}")
    return duration
