"""The universe registry's records and rules: which universes count, with their settings.

One record per change on the registry topic, keyed by the universe: its full settings, or a
tombstone (a null value) for its removal, so the topic can be compacted. Both services fold
the topic into a :class:`Registry`; this module is pure (no I/O). Reading and writing the
topic: ``schemas/universe_log.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import msgspec

from schemas.amount import AmountError, canonical, parse_amount
from schemas.events import SaleCall
from schemas.reasons import Reason
from schemas.rules import CURRENCY, DEFAULT_RULES

WINDOW: Final = re.compile(r"([1-9][0-9]{0,5})([dh])")
WINDOW_MAX_MS: Final = 3650 * 86_400_000
_UNIT_MS: Final = {"d": 86_400_000, "h": 3_600_000}
# A key: "tk_" + its public id (8 hex) + "_" + 32 random bytes (43 url-safe characters).
KEY_PREFIX: Final = "tk_"
_KEY: Final = re.compile(r"tk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_KEY_ID: Final = re.compile(r"[0-9a-f]{8}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


class UniverseError(ValueError):
    """A universe setting that cannot be stored; the message says what is expected."""


class UniverseSettings(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="v", tag=1
):
    """A registered universe with all of its settings (the latest record of a universe wins)."""

    universe: str
    updated_at_ms: int
    currency: str = ""  # "" : calls without a currency stay without one
    window: str = ""  # "" : the projector's TRACKER_ATTRIBUTION_WINDOW_DAYS
    max_amount: str = ""  # "" : no limit beyond the pixel's own (schemas/amount.py)
    # Key id -> SHA-256 (hex) of the key; the key itself is never stored.
    keys: dict[str, str] = {}


# A record's value: the settings, or None for a tombstone (the universe removed).
UniverseRecord = UniverseSettings | None

_DECODER: Final = msgspec.json.Decoder(UniverseSettings)


def encode_record(record: UniverseRecord) -> bytes | None:
    return None if record is None else msgspec.json.encode(record)


def decode_record(payload: bytes | None) -> UniverseRecord:
    """A registry record's value, checked as the command checks it; raise UniverseError for
    anything else (a record written by other means must not stop a registry's readers)."""
    if payload is None:
        return None
    try:
        record = _DECODER.decode(payload)
    except msgspec.MsgspecError as e:
        raise UniverseError(f"not a registry record: {e}") from None
    check_name(record.universe)
    check_currency(record.currency)
    check_window(record.window)
    if record.max_amount and check_max_amount(record.max_amount) != record.max_amount:
        raise UniverseError(f"maximum amount {record.max_amount!r} is not canonical")
    if not all(_KEY_ID.fullmatch(k) and _SHA256.fullmatch(h) for k, h in record.keys.items()):
        raise UniverseError("keys must map 8 hex characters to a SHA-256 in hex")
    return record


# -- checking what an operator gives -----------------------------------------------------------


def check_name(name: str) -> str:
    if not DEFAULT_RULES.universe.fullmatch(name):
        raise UniverseError(
            f"bad universe name {name!r}: 1-{DEFAULT_RULES.universe_max_length} letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


def check_currency(currency: str) -> str:
    """An ISO 4217 code (3 upper-case letters), or "" for none."""
    if currency and not CURRENCY.fullmatch(currency):
        raise UniverseError(f"bad currency {currency!r}: 3 upper-case letters, e.g. EUR")
    return currency


def window_ms(window: str) -> int:
    """``"30d"`` or ``"12h"`` in milliseconds; raise UniverseError."""
    match = WINDOW.fullmatch(window)
    ms = int(match.group(1)) * _UNIT_MS[match.group(2)] if match else 0
    if not match or ms > WINDOW_MAX_MS:
        raise UniverseError(
            f"bad window {window!r}: a number of days or hours, e.g. 30d or 12h (at most 3650d)"
        )
    return ms


def check_window(window: str) -> str:
    if window:
        window_ms(window)
    return window


def check_max_amount(amount: str) -> str:
    """An exact decimal as the pixel writes one (``100000``, ``99.90``), or "" for none."""
    if not amount:
        return ""
    try:
        value = parse_amount(amount)
    except AmountError:
        value = Decimal(0)
    if value <= 0:
        raise UniverseError(
            f"bad maximum amount {amount!r}: a positive decimal with at most 4 decimals, "
            "at most 1000000000 (e.g. 100000 or 99.90)"
        )
    return canonical(value)


# -- keys --------------------------------------------------------------------------------------


def key_hash(key: str) -> str:
    # A plain SHA-256 is enough: the key holds 256 random bits, so no dictionary or brute
    # force applies; a slow password hash would only slow every API call down.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(existing: Iterable[str] = ()) -> tuple[str, str]:
    """A fresh key and its public id (unique among ``existing`` ids)."""
    taken = set(existing)
    while True:
        key_id = secrets.token_hex(4)
        if key_id not in taken:
            return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}", key_id


def key_id_of(key: str) -> str | None:
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


# -- the registry as a whole -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registry:
    """The registry as read so far. ``required``: enforce even while it is empty."""

    universes: Mapping[str, UniverseSettings] = field(default_factory=dict)
    required: bool = False
    # Derived once per change: window per universe, and key id -> (universe, hash).
    windows: Mapping[str, int] = field(default_factory=dict)
    keys: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, universes: Mapping[str, UniverseSettings], *, required: bool = False) -> Registry:
        windows = {u: window_ms(s.window) for u, s in universes.items() if s.window}
        keys = {kid: (u, sha) for u, s in universes.items() for kid, sha in s.keys.items()}
        return cls(dict(universes), required, windows, keys)

    @property
    def enforced(self) -> bool:
        """Only registered universes count (else every universe does, as before the registry)."""
        return self.required or bool(self.universes)

    def window_ms(self, universe: str, default_ms: int) -> int:
        return self.windows.get(universe, default_ms)

    def universe_of_key(self, key: str) -> str | None:
        """The universe whose key this is, or None; the hash is compared in constant time."""
        key_id = key_id_of(key)
        found = self.keys.get(key_id) if key_id else None
        if found is None or not hmac.compare_digest(found[1], key_hash(key)):
            return None
        return found[0]


def fold(
    universes: dict[str, UniverseSettings], records: Iterable[tuple[str, UniverseRecord]]
) -> dict[str, UniverseSettings]:
    """``universes`` after ``(key, value)`` records in log order (the latest of a universe
    wins; a tombstone removes it)."""
    for universe, record in records:
        if record is None:
            universes.pop(universe, None)
        else:
            universes[universe] = record
    return universes


# -- a call under the registry -----------------------------------------------------------------
# Applied by the projector after the call's own rules (projector/interpret.py), with the
# registry as it has read it when it projects the call: a change applies from then on, and a
# rebuild applies the registry as it reads it then to the whole log. The edge applies it too,
# only for its API answers (as it applies schemas/rules.py).


def judge(call: SaleCall, registry: Registry) -> SaleCall:
    """``call`` as the registry reads it: rejected (``universe_unknown``,
    ``amount_above_limit``), given the universe's default currency, or as it was."""
    if call.status != "accepted":
        return call
    settings = registry.universes.get(call.universe)
    if settings is None:
        if registry.enforced:
            return _rejected(call, Reason.UNIVERSE_UNKNOWN)
        return call
    if settings.max_amount and Decimal(call.amount) > Decimal(settings.max_amount):
        return _rejected(call, Reason.AMOUNT_ABOVE_LIMIT)
    if not call.currency and settings.currency:
        # Stored in the ledger row, so the rollups group the sale under it.
        return msgspec.structs.replace(call, currency=settings.currency)
    return call


def _rejected(call: SaleCall, reason: Reason) -> SaleCall:
    # As the call's own rules reject one: no canonical amount, no click context.
    return msgspec.structs.replace(
        call, status="rejected", reason=reason, amount="", campaign_id="", link_id="",
        product="", click_customer_id="", clicked_at_ms=0,
    )  # fmt: skip
