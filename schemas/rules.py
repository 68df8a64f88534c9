"""From a raw pixel query string to a :class:`SaleCall`, accepted or rejected with a reason.

Pure: no I/O, no clock; the handler passes the event id and receive time. Every input maps to
an event, so that a call the edge refuses is still visible (with its reason) downstream.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Final
from urllib.parse import unquote

from schemas.amount import MAX_AMOUNT, MAX_DECIMALS, AmountError, canonical, parse_amount
from schemas.click_token import read_token
from schemas.events import ClickContext, SaleCall, SaleSource
from schemas.reasons import MESSAGES, Reason
from schemas.signing import Link, SignatureError, safe_target
from schemas.unicode import is_unicode

COOKIE_PREFIX: Final = "trk_"
MAX_QUERY_FIELDS: Final = 64
# What a rejected call keeps of each raw value: enough to diagnose, bounded for storage.
RAW_KEEP: Final = 256


@dataclasses.dataclass(frozen=True)
class Rules:
    """The bounds a call's values are checked against, in one place.

    Since the edge publishes calls as received (``schemas/raw.py``), the projector applies
    these when it reads them: a rebuild with other rules (a longer id, say) re-reads history
    under them, so calls rejected yesterday can be counted. The defaults are today's rules;
    the edge uses them too (for its API answers and its keys).
    """

    universe_max_length: int = 64
    # Transaction and customer ids: printable ASCII without spaces, bounded.
    id_max_length: int = 128
    click_id_max_length: int = 512
    product_max_length: int = 32
    # Compiled once per Rules (the hot path matches them for every call).
    universe: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)
    opaque_id: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)
    click_id: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)
    product: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lengths = (self.universe_max_length, self.id_max_length, self.click_id_max_length)
        if min(lengths) < 1 or self.product_max_length < 0:
            raise ValueError(f"rule lengths must be positive, got {self!r}")
        patterns = {
            "universe": rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{self.universe_max_length - 1}}}",
            "opaque_id": rf"[\x21-\x7e]{{1,{self.id_max_length}}}",
            "click_id": rf"[\x21-\x7e]{{1,{self.click_id_max_length}}}",
            "product": rf"[A-Za-z0-9_.-]{{0,{self.product_max_length}}}",
        }
        for name, pattern in patterns.items():
            object.__setattr__(self, name, re.compile(pattern))


DEFAULT_RULES: Final = Rules()


def reason_message(reason: str, rules: Rules = DEFAULT_RULES, *, name: str = "") -> str:
    """What a rejection reason means, in words an API client can act on (from the rules
    themselves, so the words never disagree with the check). ``name`` is the field a
    reason's code does not carry (the repeated field of ``duplicate_field``)."""
    parsed = Reason.parse(reason)
    if parsed is None:
        return reason
    found, field = parsed
    return MESSAGES[found].format(
        name=name or field, universe_pattern=rules.universe.pattern,
        id_max_length=rules.id_max_length, click_id_max_length=rules.click_id_max_length,
        max_amount=MAX_AMOUNT, max_decimals=MAX_DECIMALS, max_query_fields=MAX_QUERY_FIELDS,
    )  # fmt: skip


CURRENCY: Final = re.compile(r"[A-Z]{3}")

_FIELDS: Final = frozenset(("universe", "amount", "id", "customer", "click", "currency"))


def split_query(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True, errors="strict")``'s answer, at half the cost.

    parse_qsl unquotes every name and value; here a query without ``%`` or ``+`` (the
    pixel's usual one) is only split, and in any other each part goes through the same
    unquoting. Invalid UTF-8 in an escape raises UnicodeDecodeError, as there. A property
    test holds the two to the same answer on any query.
    """
    escaped = "%" in query or "+" in query
    pairs = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            if escaped:
                name, value = _unescape(name), _unescape(value)
            pairs.append((name, value))
    return pairs


def _unescape(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text, errors="strict") if "%" in text else text


def parse_query(query: str) -> tuple[dict[str, str], str]:
    """The known parameters of ``query`` and the first problem found ("" when none).

    Unknown parameters are ignored. A known one repeated with different values is a problem,
    since we could not know which value the merchant meant.
    """
    if query.count("&") >= MAX_QUERY_FIELDS:
        return {}, Reason.TOO_MANY_PARAMETERS
    if not query.isascii() and not is_unicode(query):
        # Raw bytes that are not UTF-8 arrive surrogate-escaped; kept, they could not be encoded.
        return {}, Reason.INVALID_UTF8
    try:
        pairs = split_query(query)
    except UnicodeDecodeError:
        return {}, Reason.INVALID_UTF8
    values: dict[str, str] = {}
    problem = ""
    for name, value in pairs:
        if name not in _FIELDS:
            continue
        if name in values and values[name] != value and not problem:
            problem = Reason.REPEATED.code(name)
        values.setdefault(name, value)
    return values, problem


# In a query without escapes: a field that starts the query or follows "&", named exactly so,
# with "=value" or nothing, up to the next "&" or the end. The leftmost match is the first
# occurrence, the one parse_query keeps.
_UNIVERSE_FIELD: Final = re.compile(r"(?:^|&)universe(?:=([^&]*))?(?=&|\Z)")
_ID_FIELD: Final = re.compile(r"(?:^|&)id(?:=([^&]*))?(?=&|\Z)")


def key_fields(query: str) -> tuple[str, str]:
    """The universe and id ``parse_query(query)`` reads ("" when absent): what a call is keyed by.

    The edge needs only these two, for every call: in the pixel's usual query (ASCII, no
    escape) two regex searches find them at half the cost of parsing the whole query; any
    other query is parsed. A property test holds the two paths to the same answer.
    """
    if "%" in query or "+" in query or not query.isascii() or query.count("&") >= MAX_QUERY_FIELDS:
        values, _ = parse_query(query)
        return values.get("universe", ""), values.get("id", "")
    universe, id_ = _UNIVERSE_FIELD.search(query), _ID_FIELD.search(query)
    return (universe[1] or "") if universe else "", (id_[1] or "") if id_ else ""


def cookie_name(universe: str) -> str:
    """One cookie per universe, so clicks for two merchants do not overwrite each other."""
    return f"{COOKIE_PREFIX}{universe}"


def resolve_context(
    click_id: str, cookie: str, *, universe: str, now_ms: int, secret: str, window_ms: int
) -> tuple[ClickContext | None, list[tuple[str, str]]]:
    """The most recent genuine click of ``universe`` among the cookie and the click id, and
    what was seen of each (``[(source, outcome)]``, outcome "valid" or the refusal reason).

    A forged, expired, malformed or foreign token is ignored, never trusted.
    """
    found: list[ClickContext] = []
    seen: list[tuple[str, str]] = []
    for source, token in (("cookie", cookie), ("click_id", click_id)):
        if not token:
            continue
        try:
            found.append(
                read_token(secret, token, universe=universe, now_ms=now_ms, window_ms=window_ms)
            )
            seen.append((source, "valid"))
        except SignatureError as e:
            seen.append((source, e.reason))
    return max(found, key=lambda c: (c.clicked_at_ms, c.click_id), default=None), seen


# Given the universe and the click id of an accepted call, the click it may be attributed to.
ContextResolver = Callable[[str, str], ClickContext | None]


def sale_call(
    query: str,
    *,
    event_id: str,
    received_at_ms: int,
    source: SaleSource = "pixel",
    context: ContextResolver | None = None,
    client_hash: str = "",
    rules: Rules = DEFAULT_RULES,
) -> SaleCall:
    """The call a pixel query string describes."""
    values, problem = parse_query(query)
    return sale_call_from_values(
        values, problem, event_id=event_id, received_at_ms=received_at_ms, source=source,
        context=context, client_hash=client_hash, rules=rules,
    )  # fmt: skip


def sale_call_from_values(
    values: dict[str, str],
    problem: str,
    *,
    event_id: str,
    received_at_ms: int,
    source: SaleSource,
    context: ContextResolver | None = None,
    client_hash: str = "",
    rules: Rules = DEFAULT_RULES,
) -> SaleCall:
    """The call that parameters (from a query string or a JSON body) describe.

    Built in one go (no copies): this is the edge's hot path.
    """
    universe = values.get("universe", "")
    amount_raw = values.get("amount", "")
    transaction_id = values.get("id", "")
    customer_id = values.get("customer", "")
    click_id = values.get("click", "")
    currency = values.get("currency", "")
    # Upper-case ASCII only: str.upper maps some other letters onto ASCII ones (dotless i to
    # "I", "ß" to "SS"), which would turn a wrong code into a valid-looking one.
    if currency.isascii():
        currency = currency.upper()

    reason = problem or _first_problem(
        universe, transaction_id, customer_id, click_id, currency, rules=rules
    )
    amount = ""
    if not reason:
        try:
            amount = canonical(parse_amount(amount_raw))
        except AmountError as e:
            reason = e.reason
    accepted = not reason
    click = context(universe, click_id) if accepted and context is not None else None
    if click is not None:
        return SaleCall(
            event_id=event_id, received_at_ms=received_at_ms, source=source, status="accepted",
            reason="", universe=universe, transaction_id=transaction_id, amount=amount,
            amount_raw=amount_raw, currency=currency, customer_id=customer_id,
            click_id=click.click_id, campaign_id=click.campaign_id, link_id=click.link_id,
            product=click.product, click_customer_id=click.customer_id,
            clicked_at_ms=click.clicked_at_ms, client_hash=client_hash,
        )  # fmt: skip
    return SaleCall(
        event_id=event_id,
        received_at_ms=received_at_ms,
        source=source,
        status="accepted" if accepted else "rejected",
        reason=reason,
        universe=universe if accepted else universe[:RAW_KEEP],
        transaction_id=transaction_id if accepted else transaction_id[:RAW_KEEP],
        amount=amount,
        amount_raw=amount_raw[:RAW_KEEP],
        currency=currency if accepted else currency[:RAW_KEEP],
        customer_id=customer_id if accepted else customer_id[:RAW_KEEP],
        # An accepted call keeps a click id only once verified (above).
        click_id="" if accepted and context is not None else click_id[:RAW_KEEP],
        client_hash=client_hash,
    )


def _first_problem(  # noqa: PLR0911 - one early return per rule reads best
    universe: str,
    transaction_id: str,
    customer_id: str,
    click_id: str,
    currency: str,
    *,
    rules: Rules,
) -> str:
    if not universe:
        return Reason.UNIVERSE_MISSING
    if not rules.universe.fullmatch(universe):
        return Reason.UNIVERSE_INVALID
    if transaction_id and not rules.opaque_id.fullmatch(transaction_id):
        return Reason.ID_INVALID
    if customer_id and not rules.opaque_id.fullmatch(customer_id):
        return Reason.CUSTOMER_INVALID
    if click_id and not rules.click_id.fullmatch(click_id):
        return Reason.CLICK_INVALID
    if currency and not CURRENCY.fullmatch(currency):
        return Reason.CURRENCY_INVALID
    return ""


# -- tracked links ---------------------------------------------------------------------------

_LINK_FIELDS: Final = {"u", "c", "k", "l", "p", "url", "s"}
_LINK_MAX_FIELDS: Final = 32


def parse_link(query: str, rules: Rules = DEFAULT_RULES) -> tuple[Link, str]:
    """The link and signature a click URL carries; raise SignatureError with the reason."""
    try:
        if query.count("&") >= _LINK_MAX_FIELDS:
            raise ValueError("too many fields")
        pairs = split_query(query)
    except (UnicodeDecodeError, ValueError):
        raise SignatureError("link_malformed") from None
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in _LINK_FIELDS:
            if name in values and values[name] != value:
                raise SignatureError("link_malformed")
            values[name] = value
    link = Link(
        universe=values.get("u", ""),
        customer_id=values.get("c", ""),
        campaign_id=values.get("k", ""),
        link_id=values.get("l", ""),
        target=values.get("url", ""),
        product=values.get("p", ""),
    )
    problem = link_problem(link, rules)
    if problem:
        raise SignatureError(problem)
    return link, values.get("s", "")


def link_problem(link: Link, rules: Rules = DEFAULT_RULES) -> str:
    """Why a link cannot be signed or followed ("" when it can)."""
    if not rules.universe.fullmatch(link.universe):
        return "link_bad_universe"
    ids = (link.customer_id, link.campaign_id, link.link_id)
    if not all(rules.opaque_id.fullmatch(v) for v in ids):
        return "link_bad_ids"
    if not rules.product.fullmatch(link.product):
        return "link_bad_product"
    if not safe_target(link.target):
        return "link_unsafe_target"
    return ""
