from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.amount import MAX_AMOUNT, AmountError, canonical, parse_amount


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10000.00", Decimal("10000.00")),
        ("12,50", Decimal("12.50")),
        ("12.5", Decimal("12.5")),
        ("0", Decimal("0")),
        ("7", Decimal("7")),
        ("0,0001", Decimal("0.0001")),
        ("1000000000", MAX_AMOUNT),
    ],
)
def test_amount_accepts_dot_or_comma_decimals(raw: str, expected: Decimal) -> None:
    assert parse_amount(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "amount_missing"),
        ("12.", "amount_malformed"),
        (".5", "amount_malformed"),
        ("1.000,50", "amount_malformed"),
        ("1,000.50", "amount_malformed"),
        ("1 000", "amount_malformed"),
        ("-5", "amount_malformed"),
        ("+5", "amount_malformed"),
        ("1e3", "amount_malformed"),
        ("12.34567", "amount_malformed"),
        ("€12", "amount_malformed"),
        ("12€", "amount_malformed"),
        ("NaN", "amount_malformed"),
        ("Infinity", "amount_malformed"),
        ("١٢", "amount_malformed"),  # Arabic-Indic digits are digits to Python, not to us
        ("1000000000.01", "amount_too_large"),
        ("9" * 15, "amount_malformed"),
    ],
)
def test_amount_refuses_everything_else_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(AmountError) as error:
        parse_amount(raw)
    assert error.value.reason == reason


def test_canonical_amount_keeps_scale_and_never_uses_an_exponent() -> None:
    assert canonical(parse_amount("12,50")) == "12.50"
    assert canonical(parse_amount("1000000000")) == "1000000000"
    assert canonical(parse_amount("0,0001")) == "0.0001"


@given(
    whole=st.integers(min_value=0, max_value=999_999_999),
    fraction=st.text(alphabet="0123456789", min_size=0, max_size=4),
    separator=st.sampled_from([".", ","]),
)
def test_amount_round_trips_every_valid_decimal_exactly(
    whole: int, fraction: str, separator: str
) -> None:
    raw = f"{whole}{separator}{fraction}" if fraction else str(whole)
    expected = Decimal(f"{whole}.{fraction}") if fraction else Decimal(whole)
    value = parse_amount(raw)
    assert value == expected
    assert Decimal(canonical(value)) == expected


@given(st.text(max_size=40))
def test_amount_parser_either_returns_a_bounded_decimal_or_a_reason(raw: str) -> None:
    try:
        value = parse_amount(raw)
    except AmountError as e:
        assert e.reason in {"amount_missing", "amount_malformed", "amount_too_large"}
    else:
        assert Decimal(0) <= value <= MAX_AMOUNT
        assert value.as_tuple().exponent >= -4  # type: ignore[operator]
