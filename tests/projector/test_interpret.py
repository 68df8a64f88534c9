"""The projector's reading of raw calls and clicks (pure: no broker, no ClickHouse)."""

from __future__ import annotations

import msgspec
import pytest

from projector.interpret import (
    ClickRefused,
    cookie_value,
    interpret_click,
    interpret_sale,
    read_click,
    read_sale,
)
from schemas.events import Click, ClickContext, EventDecodeError, SaleCall, encode
from schemas.raw import ClickRequest, SaleRequest, encode_raw
from schemas.rules import DEFAULT_RULES, RAW_KEEP, Rules, sale_call
from schemas.signing import Link, link_url, make_v1_token

SECRET = "s" * 32
OTHER_SECRET = "o" * 32
NOW = 1_767_225_600_000
DAY = 86_400_000
WINDOW = 30 * DAY


def pixel(query: str, cookies: str = "", *, problem: str = "", too_long: str = "") -> SaleRequest:
    return SaleRequest(
        event_id="e1", received_at_ms=NOW, source="pixel", query=query, cookies=cookies,
        problem=problem, too_long=too_long, client_hash="h",
    )  # fmt: skip


def api(fields: dict[str, str], problem: str = "") -> SaleRequest:
    return SaleRequest(
        event_id="e1", received_at_ms=NOW, source="api", fields=fields, problem=problem
    )


def read(raw: SaleRequest, rules: Rules = DEFAULT_RULES) -> tuple[SaleCall, list[tuple[str, str]]]:
    return interpret_sale(raw, secret=SECRET, window_ms=WINDOW, rules=rules)


def token(
    *, universe: str = "demo", at: int = NOW - DAY, click_id: str = "k1", secret: str = SECRET
) -> str:
    return make_v1_token(
        secret, ClickContext(universe, "alice", "spring", "hero", "mail", at, click_id)
    )


# -- what the edge used to publish ---------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "universe=shop_1&amount=12,50&id=T-42&customer=c9&currency=eur",
        "universe=demo&amount=10",
        "universe=demo&amount=10&utm_source=mail&x=%zz",
        "universe=d%65mo&amount=1%2C5&id=t%2F1",
        "universe=demo&amount=10&amount=10",
        "",
        "universe=demo&amount=1e3&id=" + "i" * 300,
    ],
)
def test_a_pixel_query_reads_as_the_edge_read_it(query: str) -> None:
    call, outcomes = read(pixel(query))
    assert call == sale_call(
        query, event_id="e1", received_at_ms=NOW, client_hash="h", context=lambda u, c: None
    )
    assert outcomes == []


def test_percent_encoded_universe_and_id_and_a_comma_amount() -> None:
    call, _ = read(pixel("universe=d%65mo&amount=12%2C50&id=t%2F1%20x&customer=%C3%A9"))
    assert (call.status, call.reason) == ("rejected", "id_invalid")  # a space is no id
    call, _ = read(pixel("universe=d%65mo&amount=12%2C50&id=t%2F1"))
    assert (call.status, call.universe, call.transaction_id) == ("accepted", "demo", "t/1")
    assert (call.amount, call.amount_raw) == ("12.50", "12,50")
    call, _ = read(pixel("universe=demo&amount=0,2"))
    assert (call.amount, call.amount_raw) == ("0.2", "0,2")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "universe_missing"),
        ("amount=10", "universe_missing"),
        ("universe=a%20b&amount=10", "universe_invalid"),
        ("universe=" + "u" * 65 + "&amount=10", "universe_invalid"),
        ("universe=demo", "amount_missing"),
        ("universe=demo&amount=1+000", "amount_malformed"),
        ("universe=demo&amount=1.000,50", "amount_malformed"),
        ("universe=demo&amount=1000000001", "amount_too_large"),
        ("universe=demo&amount=10&id=a%20b", "id_invalid"),
        ("universe=demo&amount=10&id=" + "i" * 129, "id_invalid"),
        ("universe=demo&amount=10&customer=%0a", "customer_invalid"),
        ("universe=demo&amount=10&currency=EURO", "currency_invalid"),
        ("universe=demo&amount=10&currency=%C4%B1sk", "currency_invalid"),
        ("universe=demo&amount=10&click=" + "c" * 513, "click_invalid"),
        ("universe=demo&amount=10&amount=11", "repeated_amount"),
        ("universe=demo&universe=other&amount=10", "repeated_universe"),
        ("universe=demo&amount=10&id=%ff", "invalid_utf8"),
        ("universe=demo&amount=10&id=\udcff", "invalid_utf8"),
        ("&".join(f"p{i}=1" for i in range(100)), "too_many_parameters"),
    ],
)
def test_each_rule_rejects_the_call_with_its_reason(query: str, reason: str) -> None:
    call, outcomes = read(pixel(query, cookies=f"trk_demo={token()}"))
    assert (call.status, call.reason, call.amount) == ("rejected", reason, "")
    assert outcomes == []  # a rejected call's context is not even read
    assert call == sale_call(query, event_id="e1", received_at_ms=NOW, client_hash="h")


def test_rejected_values_are_kept_bounded() -> None:
    call, _ = read(pixel("universe=demo&amount=" + "9" * 1000 + "&id=" + "x" * 1000))
    assert call.reason == "id_invalid"
    assert (len(call.transaction_id), len(call.amount_raw)) == (RAW_KEEP, RAW_KEEP)


def test_a_cut_query_or_cookie_header_is_rejected_as_too_long_keeping_what_was_read() -> None:
    call, outcomes = read(pixel("universe=demo&amount=10&id=t1&cust", too_long="query"))
    assert (call.status, call.reason, call.universe, call.transaction_id) == (
        "rejected", "too_long", "demo", "t1",
    )  # fmt: skip
    assert outcomes == []
    call, _ = read(pixel("universe=demo&amount=10", cookies="trk_demo=abc", too_long="cookies"))
    assert (call.status, call.reason) == ("rejected", "too_long")


def test_a_request_line_the_parser_refused_keeps_it_escaped_and_bounded() -> None:
    line = "GET /sales.php?universe=demo&amount=1\\x00" + "x" * 500 + " HTTP/1.1"
    call, outcomes = read(pixel(line, problem="malformed_request"))
    assert call == SaleCall(
        event_id="e1", received_at_ms=NOW, source="pixel", status="rejected",
        reason="malformed_request", universe="", transaction_id="", amount="",
        amount_raw=line[:RAW_KEEP], currency="", customer_id="", click_id="", client_hash="h",
    )  # fmt: skip
    assert outcomes == []


@pytest.mark.parametrize(
    "problem", ["duplicate_field", "amount_not_string", "item_not_object", "universe_not_allowed"]
)
def test_a_structural_refusal_of_the_edge_is_the_reason(problem: str) -> None:
    call, _ = read(api({"universe": "demo", "amount": "10", "id": "t1"}, problem))
    assert (call.source, call.status, call.reason, call.transaction_id) == (
        "api", "rejected", problem, "t1",
    )  # fmt: skip


def test_an_api_sale_reads_its_fields_under_the_pixel_rules() -> None:
    call, _ = read(api({"universe": "demo", "amount": "7.25", "id": "o-1", "currency": "eur"}))
    assert (call.source, call.status, call.amount, call.currency) == (
        "api", "accepted", "7.25", "EUR",
    )  # fmt: skip
    call, _ = read(api({"universe": "demo", "amount": "1e3"}))
    assert call.reason == "amount_malformed"


# -- the click context -----------------------------------------------------------------------------


def test_the_cookie_of_the_calls_universe_carries_the_click() -> None:
    cookies = f"trk_other={token(universe='other')}; trk_demo={token()}"
    call, outcomes = read(pixel("universe=demo&amount=10&id=t1", cookies))
    assert (call.click_id, call.campaign_id, call.link_id, call.product) == (
        "k1", "spring", "hero", "mail",
    )  # fmt: skip
    assert (call.click_customer_id, call.clicked_at_ms) == ("alice", NOW - DAY)
    assert outcomes == [("cookie", "valid")]


@pytest.mark.parametrize(
    ("cookie", "outcome"),
    [
        (token(secret=OTHER_SECRET), "context_forged"),
        (token()[:-2] + "xx", "context_forged"),
        (token(at=NOW - 31 * DAY), "context_expired"),
        (token(at=NOW + DAY), "context_expired"),
        (token(universe="other"), "context_other_universe"),
        ("garbage", "context_malformed"),
        (token() + "\udcff", "context_malformed"),
    ],
)
def test_a_forged_expired_or_foreign_cookie_is_ignored(cookie: str, outcome: str) -> None:
    call, outcomes = read(pixel("universe=demo&amount=10&id=t1", f"trk_demo={cookie}"))
    assert call.status == "accepted"
    assert (call.click_id, call.campaign_id, call.clicked_at_ms) == ("", "", 0)
    assert outcomes == [("cookie", outcome)]


def test_the_click_parameter_carries_the_click_and_the_latest_of_both_wins() -> None:
    older, newer = token(at=NOW - 2 * DAY, click_id="old"), token(click_id="new")
    call, outcomes = read(pixel(f"universe=demo&amount=10&click={newer}", f"trk_demo={older}"))
    assert call.click_id == "new"
    assert outcomes == [("cookie", "valid"), ("click_id", "valid")]
    call, _ = read(pixel(f"universe=demo&amount=10&click={older}", f"trk_demo={newer}"))
    assert call.click_id == "new"


def test_an_api_sale_takes_its_context_from_the_click_id_only() -> None:
    call, outcomes = read(api({"universe": "demo", "amount": "10", "click": token()}))
    assert (call.click_id, outcomes) == ("k1", [("click_id", "valid")])
    forged = token(secret=OTHER_SECRET)
    call, outcomes = read(api({"universe": "demo", "amount": "10", "click": forged}))
    assert (call.click_id, outcomes) == ("", [("click_id", "context_forged")])


def test_cookie_values_are_read_as_aiohttp_reads_them() -> None:
    assert cookie_value("a=1; trk_demo=x; b=2", "trk_demo") == "x"
    assert cookie_value('trk_demo="q.r"', "trk_demo") == "q.r"
    assert cookie_value("trk_demo=first; trk_demo=last", "trk_demo") == "last"
    assert cookie_value("trk_demox=1; xtrk_demo=2", "trk_demo") == ""
    assert cookie_value("", "trk_demo") == ""


# -- rules ---------------------------------------------------------------------------------------


def test_other_rules_read_the_same_request_differently() -> None:
    raw = pixel("universe=demo&amount=10&id=" + "i" * 200 + "&customer=" + "c" * 200)
    assert read(raw)[0].reason == "id_invalid"
    call, _ = read(raw, Rules(id_max_length=256))
    assert (call.status, call.transaction_id, call.customer_id) == (
        "accepted", "i" * 200, "c" * 200,
    )  # fmt: skip
    assert (
        read(pixel("universe=demo&amount=1&click=" + "c" * 20), Rules(click_id_max_length=10))[
            0
        ].reason
        == "click_invalid"
    )
    assert read(pixel("universe=abcd&amount=1"), Rules(universe_max_length=3))[0].reason == (
        "universe_invalid"
    )


def test_default_rules_are_todays() -> None:
    assert Rules() == DEFAULT_RULES
    assert DEFAULT_RULES.opaque_id.pattern == r"[\x21-\x7e]{1,128}"
    assert DEFAULT_RULES.click_id.pattern == r"[\x21-\x7e]{1,512}"
    assert DEFAULT_RULES.universe.pattern == r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
    with pytest.raises(ValueError, match="positive"):
        Rules(id_max_length=0)


# -- clicks --------------------------------------------------------------------------------------

LINK = Link("demo", "alice", "spring", "hero", "https://shop.example/landing?q=1", "mail")


def raw_click(link: Link = LINK, secret: str = SECRET) -> ClickRequest:
    _, _, query = link_url("https://t.example", secret, link).partition("?")
    return ClickRequest(event_id="c1", clicked_at_ms=NOW, query=query, client_hash="h")


def test_a_raw_click_reads_as_the_click_the_edge_published() -> None:
    assert interpret_click(raw_click(), secret=SECRET, rules=DEFAULT_RULES) == Click(
        event_id="c1", clicked_at_ms=NOW, universe="demo", customer_id="alice",
        campaign_id="spring", link_id="hero", product="mail", client_hash="h",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (raw_click(secret=OTHER_SECRET).query, "link_bad_signature"),
        (raw_click().query.rpartition("&s=")[0], "link_unsigned"),
        (raw_click().query + "&u=other", "link_malformed"),
        ("u=demo&c=alice&k=k&l=l&url=javascript:alert(1)&s=x", "link_unsafe_target"),
        ("u=demo&c=a%20b&k=k&l=l&url=https://x.example/&s=x", "link_bad_ids"),
        ("u=&c=a&k=k&l=l&url=https://x.example/&s=x", "link_bad_universe"),
    ],
)
def test_a_raw_click_that_does_not_verify_is_refused(query: str, reason: str) -> None:
    raw = msgspec.structs.replace(raw_click(), query=query)
    with pytest.raises(ClickRefused) as refused:
        interpret_click(raw, secret=SECRET, rules=DEFAULT_RULES)
    assert refused.value.reason == reason
    assert str(refused.value) == f"click does not verify under today's rules: {reason}"
    assert isinstance(refused.value, EventDecodeError)  # the loop's dead-letter path


def test_link_rules_follow_the_rules_too() -> None:
    long = msgspec.structs.replace(LINK, customer_id="c" * 200)
    with pytest.raises(ClickRefused, match="link_bad_ids"):
        interpret_click(raw_click(long), secret=SECRET, rules=DEFAULT_RULES)
    click = interpret_click(raw_click(long), secret=SECRET, rules=Rules(id_max_length=256))
    assert click.customer_id == "c" * 200


# -- both versions on one topic --------------------------------------------------------------------


def test_messages_of_either_version_read_as_one_form() -> None:
    typed = sale_call("universe=demo&amount=10&id=t1", event_id="e1", received_at_ms=NOW)
    kwargs = {"secret": SECRET, "window_ms": WINDOW, "rules": DEFAULT_RULES}
    assert read_sale(encode(typed), **kwargs) == (typed, [])  # type: ignore[arg-type]
    raw = pixel("universe=demo&amount=10&id=t1")
    assert read_sale(encode_raw(raw), **kwargs)[0] == msgspec.structs.replace(  # type: ignore[arg-type]
        typed, client_hash="h"
    )
    click = interpret_click(raw_click(), secret=SECRET, rules=DEFAULT_RULES)
    assert read_click(encode(click), secret=SECRET, rules=DEFAULT_RULES) == click
    assert read_click(encode_raw(raw_click()), secret=SECRET, rules=DEFAULT_RULES) == click


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"v":2,"event_id":"e1","source":"pixel"}', "invalid SaleRequest: Object missing"),
        (b'{"v":2,"event_id":"e1","source":"pixel","received_at_ms":-5}', "a negative time"),
        (b'{"v":3,"event_id":"e1"}', "unsupported SaleCall schema version 3"),
        (b"not json", "not JSON"),
        (None, "empty message"),
    ],
)
def test_what_no_version_reads_says_why(payload: bytes | None, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        read_sale(payload, secret=SECRET, window_ms=WINDOW, rules=DEFAULT_RULES)


def test_an_invalid_raw_click_says_why() -> None:
    with pytest.raises(EventDecodeError, match="invalid ClickRequest"):
        read_click(b'{"v":2,"event_id":"c1","clicked_at_ms":1}', secret=SECRET, rules=DEFAULT_RULES)
