"""Parsing the pixel's ``amount``: an exact decimal, never a float."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from schemas.reasons import Reason

MAX_DECIMALS: Final = 4
# Decimal(18, 4) in ClickHouse holds 14 integer digits; a single sale above this is a typo.
MAX_AMOUNT: Final = Decimal("1000000000")

# Digits, then at most one "." or "," followed by 1-4 digits. No sign, no exponent, no spaces,
# no thousands separators: "1.000,50" is ambiguous between locales, so it is refused.
_AMOUNT: Final = re.compile(r"([0-9]{1,14})(?:[.,]([0-9]{1,4}))?")


class AmountError(ValueError):
    """Why an amount was refused; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_amount(raw: str) -> Decimal:
    """``"12,50"`` -> ``Decimal("12.50")``; raise :class:`AmountError` for anything else."""
    if raw == "":
        raise AmountError(Reason.AMOUNT_MISSING)
    match = _AMOUNT.fullmatch(raw)
    if match is None:
        raise AmountError(Reason.AMOUNT_MALFORMED)
    whole, fraction = match.groups()
    value = Decimal(f"{whole}.{fraction}" if fraction else whole)
    if value > MAX_AMOUNT:
        raise AmountError(Reason.AMOUNT_TOO_LARGE)
    return value


def canonical(value: Decimal) -> str:
    """The decimal as a plain string without exponent, keeping the caller's scale."""
    return format(value, "f")
