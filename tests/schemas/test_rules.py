from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import decode_sale, encode
from schemas.rules import RAW_KEEP, key_fields, parse_query, sale_call, split_query


def call(query: str):  # type: ignore[no-untyped-def]
    return sale_call(query, event_id="e1", received_at_ms=1_700_000_000_000)


def test_valid_call_is_accepted_with_a_canonical_amount() -> None:
    c = call("universe=shop_1&amount=12,50&id=T-42&customer=c9&currency=eur&click=abc.def")
    assert c.status == "accepted"
    assert c.reason == ""
    assert (c.universe, c.amount, c.amount_raw) == ("shop_1", "12.50", "12,50")
    assert (c.transaction_id, c.customer_id, c.currency, c.click_id) == (
        "T-42",
        "c9",
        "EUR",
        "abc.def",
    )


def test_id_is_optional() -> None:
    c = call("universe=demo&amount=10")
    assert c.status == "accepted"
    assert c.transaction_id == ""


def test_unknown_parameters_are_ignored() -> None:
    assert call("universe=demo&amount=10&utm_source=mail&x=%zz").status == "accepted"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "universe_missing"),
        ("amount=10", "universe_missing"),
        ("universe=&amount=10", "universe_missing"),
        ("universe=a%20b&amount=10", "universe_invalid"),
        ("universe=" + "u" * 65 + "&amount=10", "universe_invalid"),
        ("universe=demo", "amount_missing"),
        ("universe=demo&amount=1+000", "amount_malformed"),
        ("universe=demo&amount=10&id=a%20b", "id_invalid"),
        ("universe=demo&amount=10&id=" + "i" * 129, "id_invalid"),
        ("universe=demo&amount=10&customer=%0a", "customer_invalid"),
        ("universe=demo&amount=10&currency=EURO", "currency_invalid"),
        ("universe=demo&amount=10&click=" + "c" * 513, "click_invalid"),
        ("universe=demo&amount=10&amount=11", "repeated_amount"),
        ("universe=demo&universe=other&amount=10", "repeated_universe"),
        ("universe=demo&amount=10&id=%ff", "invalid_utf8"),
        ("&".join(f"p{i}=1" for i in range(100)), "too_many_parameters"),
    ],
)
def test_each_problem_rejects_the_call_with_its_reason(query: str, reason: str) -> None:
    c = call(query)
    assert c.status == "rejected"
    assert c.reason == reason
    assert c.amount == ""


def test_the_same_value_repeated_is_not_a_conflict() -> None:
    assert call("universe=demo&amount=10&amount=10").status == "accepted"


def test_rejected_call_keeps_bounded_raw_values_for_diagnosis() -> None:
    c = call(urlencode({"universe": "demo", "amount": "x" * 10_000}))
    assert c.reason == "amount_malformed"
    assert c.amount_raw == "x" * RAW_KEEP


@given(st.text(max_size=300))
def test_any_query_string_maps_to_an_event_that_survives_the_wire(query: str) -> None:
    c = call(query)
    assert c.status in ("accepted", "rejected")
    assert (c.status == "accepted") == (c.reason == "")
    assert decode_sale(encode(c)) == c


def _qsl(query: str) -> list[tuple[str, str]] | str:
    try:
        return parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return "invalid utf-8"


def _split(query: str) -> list[tuple[str, str]] | str:
    try:
        return split_query(query)
    except UnicodeDecodeError:
        return "invalid utf-8"


# Escapes of every kind: valid and invalid UTF-8 sequences, cut ones, "+", separators.
_QUERY_PIECES = st.sampled_from(
    [
        "&",
        "=",
        "+",
        "%",
        "%2",
        "%26",
        "%3D",
        "%2B",
        "%C3%A9",
        "%C3",
        "%FF",
        "%e9",
        "a",
        "1",
        "é",
        ";",
    ]
)


@given(st.lists(st.one_of(_QUERY_PIECES, st.characters()), max_size=40).map("".join))
def test_the_query_splitter_reads_any_query_exactly_as_parse_qsl(query: str) -> None:
    assert _split(query) == _qsl(query)


def _parsed_key_fields(query: str) -> tuple[str, str]:
    values, _ = parse_query(query)
    return values.get("universe", ""), values.get("id", "")


# Fields named as, inside or around the two the edge looks for, with and without a value,
# between empty fields and stray separators.
_KEY_NAMES = st.sampled_from(["universe", "id", "xid", "idx", "universe_", "", "amount", "id\n"])
_KEY_FIELDS = st.builds(
    "".join,
    st.tuples(
        st.one_of(_KEY_NAMES, st.lists(_QUERY_PIECES, max_size=3).map("".join)),
        st.sampled_from(["", "=", "=="]),
        st.lists(st.one_of(_QUERY_PIECES, st.characters()), max_size=4).map("".join),
    ),
)


@settings(max_examples=1000)  # cheap, and a wrong field boundary hides in a narrow corner
@given(st.lists(_KEY_FIELDS, max_size=8).map("&".join))
def test_the_edge_reads_a_calls_universe_and_id_exactly_as_the_projector(query: str) -> None:
    assert key_fields(query) == _parsed_key_fields(query)


@pytest.mark.parametrize(
    "query",
    [
        "universe=u&amount=1&id=t", "id=t&universe=u", "id=t1&id=t2&universe=u&universe=v",
        "xid=1&id=2", "universe&id=", "universe=a=b&id==", "&&universe=u&&", "id\n=1&id=2",
        "id=1\n", "universe=%75&id=t%31", "universe=u+v&id=1", "universe=é&id=1",
        "&".join(["a=1"] * 64) + "&universe=x&id=1", "",
    ],
)  # fmt: skip
def test_the_edge_reads_universe_and_id_in_these_queries_as_the_projector(query: str) -> None:
    assert key_fields(query) == _parsed_key_fields(query)


def test_at_most_64_parameters_are_read() -> None:
    assert parse_query("&".join(["a=1"] * 63) + "&universe=x") == ({"universe": "x"}, "")
    assert parse_query("&".join(["a=1"] * 64) + "&universe=x") == ({}, "too_many_parameters")
    assert parse_query("&".join(["a=%41"] * 65)) == ({}, "too_many_parameters")


@pytest.mark.parametrize(
    "currency",
    ["%C4%B1sk", "%C3%9Fx", "eu%C5%99", "%EF%BD%85ur"],
    ids=["dotless-i", "sharp-s", "r-caron", "fullwidth"],
)
def test_a_currency_code_is_ascii_letters_before_upper_casing(currency: str) -> None:
    # Dotless i upper-cases to "I" and "ß" to "SS": valid-looking codes from wrong input.
    c = call(f"universe=demo&amount=10&currency={currency}")
    assert (c.status, c.reason) == ("rejected", "currency_invalid")


def test_lower_case_ascii_currency_codes_are_still_upper_cased() -> None:
    assert call("universe=demo&amount=10&currency=isk").currency == "ISK"


def test_a_query_of_undecodable_raw_bytes_is_invalid_utf8() -> None:
    # aiohttp hands raw bytes over surrogate-escaped; kept, they could not be encoded.
    c = call("universe=demo&amount=10&id=a\udcffb")
    assert (c.status, c.reason) == ("rejected", "invalid_utf8")
    assert decode_sale(encode(c)) == c
