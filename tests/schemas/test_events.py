import orjson
import pytest

from schemas.events import (
    SALE_SCHEMA_VERSION,
    Click,
    ClickContext,
    EventDecodeError,
    SaleCall,
    decode_click,
    decode_sale,
    encode,
)


def sale(**changes: object) -> SaleCall:
    fields: dict[str, object] = {
        "event_id": "e1",
        "received_at_ms": 1,
        "source": "pixel",
        "status": "accepted",
        "reason": "",
        "universe": "demo",
        "transaction_id": "t1",
        "amount": "12.50",
        "amount_raw": "12,50",
        "currency": "",
        "customer_id": "",
        "click_id": "",
    }
    fields.update(changes)
    return SaleCall(**fields)  # type: ignore[arg-type]


def test_sale_call_round_trips_through_json() -> None:
    event = sale()
    assert decode_sale(encode(event)) == event
    assert orjson.loads(encode(event))["v"] == SALE_SCHEMA_VERSION


CLICK = ClickContext("demo", "alice", "spring", "hero", "mail", 5, "click-1")


def test_a_click_event_carries_its_click_context_under_the_same_json_as_ever() -> None:
    event = Click.of(CLICK, client_hash="h")
    assert orjson.loads(encode(event)) == {
        "event_id": "click-1", "clicked_at_ms": 5, "universe": "demo", "customer_id": "alice",
        "campaign_id": "spring", "link_id": "hero", "product": "mail", "client_hash": "h", "v": 1,
    }  # fmt: skip
    assert decode_click(encode(event)).context() == CLICK


def test_a_sale_carries_its_verified_click_context_or_none() -> None:
    carried = sale(
        click_id="click-1", campaign_id="spring", link_id="hero", product="mail",
        click_customer_id="alice", clicked_at_ms=5,
    )  # fmt: skip
    assert carried.carried_click() == CLICK
    assert sale().carried_click() is None


def test_calls_of_one_transaction_share_a_key_and_calls_without_id_do_not() -> None:
    assert sale(event_id="a").kafka_key() == sale(event_id="b").kafka_key()
    assert (
        sale(event_id="a", transaction_id="").kafka_key()
        != sale(event_id="b", transaction_id="").kafka_key()
    )
    assert sale(universe="u1").kafka_key() != sale(universe="u2").kafka_key()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "empty message"),
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 99}', "unsupported SaleCall schema version 99"),
        (b'{"v": 1}', "missing fields"),
    ],
)
def test_undecodable_payloads_say_why(payload: bytes | None, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode_sale(payload)


def test_wrong_field_types_are_refused() -> None:
    data = orjson.loads(encode(sale()))
    data["amount"] = 12.5
    with pytest.raises(EventDecodeError, match="field amount must be a string"):
        decode_sale(orjson.dumps(data))
    data = orjson.loads(encode(sale()))
    data["status"] = "maybe"
    with pytest.raises(EventDecodeError, match="unknown status"):
        decode_sale(orjson.dumps(data))
