import orjson
import pytest

from schemas.events import SALE_SCHEMA_VERSION, EventDecodeError, SaleCall, decode_sale, encode


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
