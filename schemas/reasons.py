"""Why a sale call is rejected: every code stored in ``sales_calls.reason``, with its message.

A :class:`Reason`'s value is the stored code. Two are families, one code per field:
``repeated_<name>`` and ``<name>_not_string`` (:meth:`Reason.code` builds them). Messages are
templates, filled by :func:`schemas.rules.reason_message` from the rules in force.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

_NAME: Final = "<name>"


class Reason(StrEnum):
    # Pixel and API: the values of a call (schemas/rules.py, schemas/amount.py).
    UNIVERSE_MISSING = "universe_missing"
    UNIVERSE_INVALID = "universe_invalid"
    AMOUNT_MISSING = "amount_missing"
    AMOUNT_MALFORMED = "amount_malformed"
    AMOUNT_TOO_LARGE = "amount_too_large"
    ID_INVALID = "id_invalid"
    CUSTOMER_INVALID = "customer_invalid"
    CLICK_INVALID = "click_invalid"
    CURRENCY_INVALID = "currency_invalid"
    # Pixel: the shape of its query string and request.
    REPEATED = "repeated_<name>"
    INVALID_UTF8 = "invalid_utf8"
    TOO_MANY_PARAMETERS = "too_many_parameters"
    TOO_LONG = "too_long"
    MALFORMED_REQUEST = "malformed_request"
    # API: the shape of a sale object (ingest/api.py).
    ITEM_NOT_OBJECT = "item_not_object"
    NOT_STRING = "<name>_not_string"
    UNIVERSE_NOT_ALLOWED = "universe_not_allowed"
    DUPLICATE_FIELD = "duplicate_field"
    # The universe registry (schemas/universes.py): judged by the projector, and by the API.
    UNIVERSE_UNKNOWN = "universe_unknown"
    AMOUNT_ABOVE_LIMIT = "amount_above_limit"
    # Refunds (POST /v1/refunds, projector/refunds.py): the refund object, then the sale.
    REFUND_ID_INVALID = "refund_id_invalid"
    REFUND_AMOUNT_ZERO = "refund_amount_zero"
    SALE_UNKNOWN = "sale_unknown"
    REFUND_ABOVE_REMAINING = "refund_above_remaining"
    CURRENCY_MISMATCH = "currency_mismatch"

    def code(self, name: str = "") -> str:
        """The stored code: the value itself, or for a family the code of field ``name``."""
        if _NAME not in self.value:
            return self.value
        if not name:
            raise ValueError(f"{self.name} needs a field name")
        return self.value.replace(_NAME, name)

    @classmethod
    def parse(cls, code: str) -> tuple[Reason, str] | None:
        """The reason a stored code stands for and the field it names ("" for none); None
        for a code that is no reason of ours."""
        try:
            return cls(code), ""
        except ValueError:
            pass
        for reason in (cls.REPEATED, cls.NOT_STRING):
            prefix, _, suffix = reason.value.partition(_NAME)
            if code.startswith(prefix) and code.endswith(suffix):
                name = code[len(prefix) : len(code) - len(suffix)]
                if name:
                    return reason, name
        return None


# Reasons only a refund gets.
REFUND_ONLY: Final = frozenset(
    {
        Reason.REFUND_ID_INVALID, Reason.REFUND_AMOUNT_ZERO, Reason.SALE_UNKNOWN,
        Reason.REFUND_ABOVE_REMAINING, Reason.CURRENCY_MISMATCH,
    }
)  # fmt: skip
# Reasons the pixel cannot give (docs/reference.md "The sale pixel" lists the others).
API_ONLY: Final = REFUND_ONLY | frozenset(
    {Reason.ITEM_NOT_OBJECT, Reason.NOT_STRING, Reason.UNIVERSE_NOT_ALLOWED, Reason.DUPLICATE_FIELD}
)

# What each reason means, in words a merchant can act on. ``{name}`` is the field; the other
# fields come from the rules (schemas.rules.reason_message), so words and checks agree.
MESSAGES: Final[dict[Reason, str]] = {
    Reason.UNIVERSE_MISSING: "universe is required",
    Reason.UNIVERSE_INVALID: "universe must match {universe_pattern}",
    Reason.AMOUNT_MISSING: "amount is required",
    Reason.AMOUNT_MALFORMED: (
        "amount must be digits with at most one . or , and up to {max_decimals} decimals"
    ),
    Reason.AMOUNT_TOO_LARGE: "amount must be at most {max_amount}",
    Reason.ID_INVALID: "id must be 1-{id_max_length} printable ASCII characters without spaces",
    Reason.CUSTOMER_INVALID: (
        "customer must be 1-{id_max_length} printable ASCII characters without spaces"
    ),
    Reason.CLICK_INVALID: "click must be at most {click_id_max_length} printable ASCII characters",
    Reason.CURRENCY_INVALID: "currency must be a 3-letter ISO 4217 code",
    Reason.REPEATED: "parameter {name} is given more than once with different values",
    Reason.INVALID_UTF8: "the query string is not valid UTF-8",
    Reason.TOO_MANY_PARAMETERS: "the query string has more than {max_query_fields} parameters",
    Reason.TOO_LONG: "the query string or the trk_* cookies are longer than the edge keeps",
    Reason.MALFORMED_REQUEST: "the request line holds raw control or non-UTF-8 bytes",
    Reason.ITEM_NOT_OBJECT: "each sale must be a JSON object",
    Reason.NOT_STRING: "field {name} must be a string",
    Reason.UNIVERSE_NOT_ALLOWED: "this API key may not report sales of that universe",
    Reason.DUPLICATE_FIELD: "field {name} appears more than once",
    Reason.UNIVERSE_UNKNOWN: "universe is not registered (python -m projector universes add)",
    Reason.AMOUNT_ABOVE_LIMIT: "amount is above the universe's maximum per sale",
    Reason.REFUND_ID_INVALID: (
        "refund_id is required: 1-{id_max_length} printable ASCII characters without spaces"
    ),
    Reason.REFUND_AMOUNT_ZERO: "a refund amount must be above 0 (omit it to refund the rest)",
    Reason.SALE_UNKNOWN: (
        "no counted sale has this id (yet): send the refund again once the sale is counted"
    ),
    Reason.REFUND_ABOVE_REMAINING: "the refund is more than what is left of the sale",
    Reason.CURRENCY_MISMATCH: "currency differs from the sale's",
}
