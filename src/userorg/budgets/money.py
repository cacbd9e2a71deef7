"""Amounts and periods: decimals (never floats) and calendar-aligned UTC periods.

Amounts are stored as ``Numeric(24, 6)`` and counted in Redis as integer micro-units (so the
Lua arithmetic is exact). A period is derived from a timestamp alone, so a new period starts
from zero at the boundary without any job having to run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

SCALE: Final = 6
QUANTUM: Final = Decimal(1).scaleb(-SCALE)
MICRO: Final = 10**SCALE
# Amounts are at most 1e9 (schemas): below 2**53 micro-units, exact as a Lua number.
PERIODS: Final = ("monthly", "quarterly", "annual")


def money(value: Decimal) -> str:
    """A canonical decimal string: trailing zeros dropped, at least two decimals."""
    text = format(value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN).normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def to_micro(value: Decimal) -> int:
    return int((value * MICRO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_micro(value: int) -> Decimal:
    return (Decimal(value) / MICRO).quantize(QUANTUM)


@dataclass(frozen=True, slots=True)
class Period:
    kind: str
    start: dt.datetime
    end: dt.datetime  # exclusive

    @property
    def key(self) -> str:
        if self.kind == "monthly":
            return f"{self.start.year:04d}-{self.start.month:02d}"
        if self.kind == "quarterly":
            return f"{self.start.year:04d}-Q{(self.start.month - 1) // 3 + 1}"
        return f"{self.start.year:04d}"

    def months(self) -> list[dt.date]:
        out: list[dt.date] = []
        current = self.start.date()
        while current < self.end.date():
            out.append(current)
            current = _add_months(current, 1)
        return out


def _add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def period_of(kind: str, at: dt.datetime) -> Period:
    """The calendar period (UTC) containing ``at``."""
    at = at.astimezone(dt.UTC)
    if kind == "monthly":
        first = dt.date(at.year, at.month, 1)
        months = 1
    elif kind == "quarterly":
        first = dt.date(at.year, (at.month - 1) // 3 * 3 + 1, 1)
        months = 3
    elif kind == "annual":
        first = dt.date(at.year, 1, 1)
        months = 12
    else:
        raise ValueError(f"unknown period {kind!r}")
    end = _add_months(first, months)
    return Period(
        kind,
        dt.datetime(first.year, first.month, 1, tzinfo=dt.UTC),
        dt.datetime(end.year, end.month, 1, tzinfo=dt.UTC),
    )


def month_of(at: dt.datetime) -> dt.date:
    at = at.astimezone(dt.UTC)
    return dt.date(at.year, at.month, 1)
