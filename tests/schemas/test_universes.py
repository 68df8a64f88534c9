"""The registry's pure parts: what an operator may give, keys, the fold, and the rule."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import SaleCall
from schemas.rules import sale_call
from schemas.universes import (
    Registry,
    UniverseError,
    UniverseRecord,
    UniverseSettings,
    check_currency,
    check_max_amount,
    check_name,
    decode_record,
    encode_record,
    fold,
    judge,
    key_hash,
    key_id_of,
    new_key,
    window_ms,
)


def call(query: str) -> SaleCall:
    return sale_call(query, event_id="e", received_at_ms=1)


def registry(*universes: UniverseSettings, required: bool = False) -> Registry:
    return Registry.of({u.universe: u for u in universes}, required=required)


def shop(**given: str) -> UniverseSettings:
    return UniverseSettings(universe="shop", updated_at_ms=1, **given)  # type: ignore[arg-type]


def test_windows_are_days_or_hours() -> None:
    assert window_ms("30d") == 30 * 86_400_000
    assert window_ms("12h") == 12 * 3_600_000
    assert window_ms("3650d") == 3650 * 86_400_000
    for bad in ("", "0d", "30", "3w", "1.5d", "-1d", "3651d", " 1d", "1D"):
        with pytest.raises(UniverseError, match="bad window"):
            window_ms(bad)


def test_currency_names_and_amounts_are_checked_exactly() -> None:
    assert check_currency("EUR") == "EUR"
    assert check_currency("") == ""
    for bad in ("eur", "EURO", "E1R"):
        with pytest.raises(UniverseError, match=f"bad currency '{bad}'"):
            check_currency(bad)
    assert check_name("shop_b.eu-1") == "shop_b.eu-1"
    for bad in ("", "-shop", "a b", "x" * 65):
        with pytest.raises(UniverseError, match="bad universe name"):
            check_name(bad)
    assert check_max_amount("100000") == "100000"
    assert check_max_amount("99,90") == "99.90"
    for bad in ("0", "1e3", "-5", "1000000001", "1.00001"):
        with pytest.raises(UniverseError, match="bad maximum amount"):
            check_max_amount(bad)


def test_a_key_is_found_by_its_hash_only() -> None:
    key, key_id = new_key()
    assert key_id_of(key) == key_id and len(key) == 3 + 8 + 1 + 43
    stored = UniverseSettings(universe="shop", updated_at_ms=1, keys={key_id: key_hash(key)})
    assert key.encode() not in (encode_record(stored) or b"")
    r = registry(stored)
    assert r.universe_of_key(key) == "shop"
    # Same id, other secret; a malformed key; the hash itself.
    assert r.universe_of_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert r.universe_of_key("tk_" + key_id) is None
    assert r.universe_of_key(key_hash(key)) is None


def test_the_latest_record_of_a_universe_wins_and_a_removal_removes() -> None:
    a1, a2 = shop(currency="EUR"), shop(currency="USD")
    other = UniverseSettings(universe="other", updated_at_ms=2)
    records: list[tuple[str, UniverseRecord]] = [
        ("shop", a1), ("other", other), ("shop", a2), ("other", None),  # None: a tombstone
    ]  # fmt: skip
    decoded = [(key, decode_record(encode_record(r))) for key, r in records]
    assert decoded == records
    assert fold({}, decoded) == {"shop": a2}
    with pytest.raises(UniverseError, match="not a registry record"):
        decode_record(b'{"v": 2, "universe": "x", "updated_at_ms": 1}')


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ('"universe": "a b"', "bad universe name"),
        ('"universe": "x", "window": "3w"', "bad window"),
        ('"universe": "x", "currency": "eur"', "bad currency"),
        ('"universe": "x", "max_amount": "10,5"', "is not canonical"),
        ('"universe": "x", "keys": {"k": "abc"}', "keys must map"),
    ],
)
def test_a_record_written_by_other_means_is_checked_like_the_commands(
    fields: str, error: str
) -> None:
    with pytest.raises(UniverseError, match=error):
        decode_record(f'{{"v": 1, "updated_at_ms": 1, {fields}}}'.encode())


def test_an_empty_registry_judges_nothing_unless_required() -> None:
    accepted = call("universe=any&amount=1")
    assert judge(accepted, registry()) == accepted
    rejected = judge(accepted, registry(required=True))
    assert (rejected.status, rejected.reason, rejected.amount) == (
        "rejected", "universe_unknown", ""
    )  # fmt: skip


def test_a_registered_universe_applies_its_limit_and_currency() -> None:
    r = registry(shop(currency="EUR", max_amount="100"))
    assert judge(call("universe=shop&amount=100"), r).currency == "EUR"
    assert judge(call("universe=shop&amount=100&currency=SEK"), r).currency == "SEK"
    above = judge(call("universe=shop&amount=100.01"), r)
    assert (above.status, above.reason) == ("rejected", "amount_above_limit")
    assert judge(call("universe=other&amount=1"), r).reason == "universe_unknown"
    # A call its own rules rejected keeps its own reason.
    bad = call("universe=other&amount=x")
    assert judge(bad, r) == bad
    assert msgspec.structs.replace(judge(call("universe=shop&amount=5"), r), currency="") == call(
        "universe=shop&amount=5"
    )
