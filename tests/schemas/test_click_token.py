"""The opaque click token (version 2) and the version-1 tokens still read."""

from __future__ import annotations

import base64

import pytest

from revealing import revealed
from schemas.click_token import expires_at_s, read_token, seal
from schemas.events import ClickContext
from schemas.signing import SignatureError, make_v1_token

SECRET = "s" * 40
DAY = 86_400_000
NOW = 1_900_000_000_000
CLICK = ClickContext("shop", "cust-7f3a", "camp-spring", "link-hero", "newsletter", NOW, "c-1")
IDS = ("cust-7f3a", "camp-spring", "link-hero")


def token(click: ClickContext = CLICK, expires: int = (NOW + 30 * DAY) // 1000) -> str:
    return seal(SECRET, click, expires_at_s=expires)


def read(t: str, *, universe: str = "shop", now: int = NOW, secret: str = SECRET) -> ClickContext:
    return read_token(secret, t, universe=universe, now_ms=now, window_ms=30 * DAY)


def reason(t: str, **kwargs: object) -> str:
    with pytest.raises(SignatureError) as error:
        read(t, **kwargs)  # type: ignore[arg-type]
    return error.value.reason


def test_a_sealed_click_reads_back_as_the_same_click() -> None:
    assert read(token()) == CLICK


def test_a_token_shows_no_customer_campaign_or_link_id_in_any_encoding() -> None:
    sealed = token()
    assert revealed(IDS, sealed) == []
    # The checker itself finds them in what version 1 made of the same click.
    assert revealed(IDS, make_v1_token(SECRET, CLICK)) == list(IDS)


def test_two_tokens_of_one_click_differ() -> None:
    # A fresh nonce each time: equal clicks are not linkable by their tokens.
    assert token() != token()


def test_the_header_says_the_version_and_expiry_in_the_clear() -> None:
    sealed = token(expires=2_000_000_123)
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    assert raw[0] == 2
    assert int.from_bytes(raw[1:5], "big") == 2_000_000_123
    assert expires_at_s(sealed) == 2_000_000_123
    assert expires_at_s(make_v1_token(SECRET, CLICK)) is None
    assert expires_at_s("AAAA") is None


def test_a_changed_expiry_is_forged() -> None:
    sealed = token()
    raw = bytearray(base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4)))
    raw[4] ^= 1  # the header is authenticated: a script cannot extend a click's life
    changed = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert reason(changed) == "context_forged"


@pytest.mark.parametrize("position", [0, 10, 30, -1])
def test_any_changed_character_is_refused(position: int) -> None:
    sealed = token()
    flipped = "B" if sealed[position] != "B" else "C"
    changed = (
        sealed[:position] + flipped + sealed[position + 1 :]
        if position != -1
        else sealed[:-1] + flipped
    )
    assert reason(changed) in ("context_forged", "context_malformed")


def test_another_secret_or_universe_reads_as_forged() -> None:
    assert reason(token(), secret="t" * 40) == "context_forged"
    # Another universe's key: indistinguishable from a forgery without trying every key.
    assert reason(token(), universe="other") == "context_forged"


def test_an_old_click_is_expired_whatever_its_header_says() -> None:
    sealed = token(expires=4_000_000_000)  # the projector's window decides, not the header
    assert reason(sealed, now=NOW + 31 * DAY) == "context_expired"
    assert reason(sealed, now=NOW - 3_600_000) == "context_expired"  # from the future


@pytest.mark.parametrize("bad", ["", "garbage", "é" * 50, "A" * 43, "!" * 60, "AgAAAA"])
def test_malformed_tokens_are_refused_not_errors(bad: str) -> None:
    assert reason(bad) == "context_malformed"


def test_version_1_tokens_are_still_read_until_they_expire() -> None:
    old = make_v1_token(SECRET, CLICK)
    assert read(old) == CLICK
    assert reason(old, now=NOW + 31 * DAY) == "context_expired"
    assert reason(old, universe="other") == "context_other_universe"
    assert reason(make_v1_token("t" * 40, CLICK)) == "context_forged"


def test_a_typical_token_is_short_enough_for_a_url_and_a_cookie() -> None:
    assert len(token()) < 200
