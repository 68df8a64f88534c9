"""Every reason a rejected call can carry is a :class:`Reason` with a message, and the list of
pixel reasons in docs/reference.md is the enum's: neither can drift from the code."""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

from ingest.api import JsonNumber, JsonObject, item_values
from projector.interpret import interpret_sale
from projector.refunds import SaleFacts, decide_refunds
from schemas.raw import RefundRequest, SaleRequest
from schemas.reasons import API_ONLY, MESSAGES, Reason
from schemas.refunds import RefundCall, read_refund
from schemas.rules import DEFAULT_RULES, reason_message, sale_call, sale_call_from_values
from schemas.universes import Registry, UniverseSettings

ROOT = Path(__file__).parent.parent.parent
OK = "universe=u&amount=1"
# One pixel query per reason its rules give.
PIXEL = {
    "amount=1": "universe_missing",
    "universe=-u&amount=1": "universe_invalid",
    "universe=u": "amount_missing",
    "universe=u&amount=1e3": "amount_malformed",
    "universe=u&amount=1000000001": "amount_too_large",
    f"{OK}&id=a%20b": "id_invalid",
    f"{OK}&customer=%C3%A9": "customer_invalid",
    f"{OK}&click={'c' * 513}": "click_invalid",
    f"{OK}&currency=EURO": "currency_invalid",
    f"{OK}&amount=2": "repeated_amount",
    f"{OK}&id=%FF": "invalid_utf8",
    "&".join(["a=1"] * 65): "too_many_parameters",
}
# A string literal of the code equal to a reason's code that is something else.
NOT_REASONS = {
    ("ingest/protocol.py", "malformed_request"),  # a protocol event's metric label
    ("schemas/contract.py", "too_long"),  # SaleRequest's field of that name
}


def produced() -> dict[str, str]:
    """Each reason the pixel, the API and the projector's reading of the edge's marks give,
    by the input that gave it."""
    found: dict[str, str] = {}
    for query in PIXEL:
        found[query] = sale_call(query, event_id="e", received_at_ms=1).reason
    api_items: dict[str, object] = {
        "list": [],
        "number": JsonObject([("amount", 1.5)]),
        "other universe": JsonObject([("amount", "1"), ("universe", "v")]),
        "repeated key": JsonObject([("amount", JsonNumber("1")), ("amount", "2")]),
    }
    for label, item in api_items.items():
        values, problem, _ = item_values(item, "u")
        call = sale_call_from_values(values, problem, event_id="e", received_at_ms=1, source="api")
        found[f"api {label}"] = call.reason
    marks = {
        "cut query": SaleRequest(
            event_id="e", received_at_ms=1, source="pixel", query=OK, too_long="query"
        ),
        "refused line": SaleRequest(
            event_id="e", received_at_ms=1, source="pixel", query="GET /sales\x01",
            problem=Reason.MALFORMED_REQUEST,
        ),
    }  # fmt: skip
    for label, raw in marks.items():
        call, _ = interpret_sale(raw, secret="s" * 32, window_ms=1000, rules=DEFAULT_RULES)
        found[label] = call.reason
    # The registry's reasons (schemas.universes.judge), as the projector reads a call.
    registry = Registry.of({"u": UniverseSettings(universe="u", updated_at_ms=1, max_amount="1")})
    for label, query in (("unregistered", "universe=v&amount=1"), ("above", "universe=u&amount=2")):
        raw = SaleRequest(event_id="e", received_at_ms=1, source="pixel", query=query)
        call, _ = interpret_sale(
            raw, secret="s" * 32, window_ms=1000, rules=DEFAULT_RULES, registry=registry
        )
        found[f"registry {label}"] = call.reason
    found.update(refund_reasons())
    return found


def refund_reasons() -> dict[str, str]:
    """The reasons only refunds give: of their shape, then of their sale."""

    def refund(**fields: str) -> RefundCall:
        return read_refund(RefundRequest(event_id="r", received_at_ms=1, fields=fields))

    ok = {"universe": "u", "id": "t1", "refund_id": "r1"}
    sale = SaleFacts(Decimal("10"), "EUR")
    decided = {
        "refund of an unknown sale": (refund(**ok), None),
        "refund above the sale": (refund(**ok, amount="11"), sale),
        "refund in another currency": (refund(**ok, currency="usd"), sale),
    }
    found = {
        "refund without refund id": refund(universe="u", id="t1").reason,
        "refund of 0": refund(**ok, amount="0,00").reason,
    }
    for label, pair in decided.items():
        [outcome], _ = decide_refunds([pair], {})
        found[label] = outcome.decision.reason
    return found


def test_every_reason_the_code_gives_is_in_the_enum_with_a_message() -> None:
    reasons = produced()
    for query, code in PIXEL.items():
        assert reasons[query] == code
    seen = set()
    for label, code in reasons.items():
        parsed = Reason.parse(code)
        assert parsed is not None, (label, code)
        seen.add(parsed[0])
        message = reason_message(code)
        assert message and message != code and "{" not in message.replace("{0,63}", ""), label
    # And every reason of the enum can be given.
    assert seen == set(Reason)
    assert MESSAGES.keys() == set(Reason)


def test_parametrized_reasons_keep_their_codes() -> None:
    assert Reason.REPEATED.code("amount") == "repeated_amount"
    assert Reason.NOT_STRING.code("amount") == "amount_not_string"
    assert Reason.AMOUNT_MALFORMED.code() == "amount_malformed"
    assert Reason.parse("repeated_id") == (Reason.REPEATED, "id")
    assert Reason.parse("currency_not_string") == (Reason.NOT_STRING, "currency")
    assert Reason.parse("too_long") == (Reason.TOO_LONG, "")
    assert Reason.parse("repeated_") is None
    assert Reason.parse("something_else") is None
    assert reason_message("id_not_string") == "field id must be a string"


def test_the_api_messages_are_the_enums() -> None:
    assert item_values([], "u")[2] == "each sale must be a JSON object"
    assert item_values(JsonObject([("id", 1.5)]), "u")[2] == "field id must be a string"
    repeated = JsonObject([("amount", "1"), ("id", "a"), ("id", "b")])
    assert item_values(repeated, "u")[2] == "field id appears more than once"
    assert reason_message("universe_invalid") == (
        f"universe must match {DEFAULT_RULES.universe.pattern}"
    )
    assert reason_message("amount_too_large") == "amount must be at most 1000000000"


def test_no_reason_is_spelled_outside_the_enum() -> None:
    """A reason written as a bare string (or an f-string family) would bypass the enum."""
    codes = {r.value for r in Reason if "<" not in r.value}
    families = [re.compile(re.escape(r.value).replace("<name>", ".*")) for r in Reason]
    bare = []
    for package in ("schemas", "ingest", "projector"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == "schemas/reasons.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    shape = "".join(
                        str(v.value) if isinstance(v, ast.Constant) else "x" for v in node.values
                    )
                    if any(f.fullmatch(shape) for f in families):
                        bare.append((name, shape))
                elif isinstance(node, ast.Constant) and node.value in codes:
                    bare.append((name, node.value))
    assert set(bare) == NOT_REASONS


def documented_pixel_reasons() -> list[str]:
    """The codes docs/reference.md's "The sale pixel" lists after "its reason in
    `sales_calls.reason`:"."""
    text = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    start = text.index("its reason in `sales_calls.reason`:") + len(
        "its reason in `sales_calls.reason`:"
    )
    paragraph = text[start : text.index("\n\n", start)]
    # Items are separated by commas outside parentheses; each starts with its code.
    items, depth, item = [], 0, ""
    for char in paragraph:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += char
    items.append(item)
    codes = []
    for one in items:
        code = re.search(r"`([^`]+)`", one)
        assert code is not None, one
        codes.append(code.group(1))
    return codes


def test_the_reference_lists_the_pixel_reasons_of_the_enum() -> None:
    listed = documented_pixel_reasons()
    assert len(listed) == len(set(listed))
    assert set(listed) == {r.value for r in Reason if r not in API_ONLY}
