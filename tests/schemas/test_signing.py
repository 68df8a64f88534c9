import pytest

from schemas.click_token import read_token
from schemas.events import ClickContext
from schemas.signing import (
    Link,
    SignatureError,
    link_url,
    make_v1_token,
    safe_target,
    sign_link,
    verify_link,
)

SECRET = "s" * 40
LINK = Link("shop", "cust-1", "spring", "hero", "https://shop.example/p?x=1", "newsletter")
DAY = 86_400_000
CLICK = ClickContext("shop", "cust-1", "spring", "hero", "newsletter", 1_000 * DAY, "click-1")


def test_a_followed_link_is_the_click_its_token_carries_in_the_same_bytes_as_ever() -> None:
    click = LINK.click(1_000 * DAY, "click-1")
    assert click == CLICK
    # Cookies and click ids already out there must still read: the signed bytes never change.
    assert make_v1_token(SECRET, click) == (
        "WyJzaG9wIiwiY3VzdC0xIiwic3ByaW5nIiwiaGVybyIsIm5ld3NsZXR0ZXIiLDg2NDAwMDAwMDAwLCJjbGljay0xIl0"
        ".-NfXVqShE6gV__2X-aa2Lz"
    )


def test_a_signed_link_verifies() -> None:
    verify_link(SECRET, LINK, sign_link(SECRET, LINK))


@pytest.mark.parametrize(
    "changed",
    [
        Link("shop", "cust-2", "spring", "hero", LINK.target, "newsletter"),
        Link("shop", "cust-1", "summer", "hero", LINK.target, "newsletter"),
        Link("shop", "cust-1", "spring", "hero", "https://evil.example/", "newsletter"),
        Link("shop", "cust-1", "spring", "hero", LINK.target, ""),
        Link("other", "cust-1", "spring", "hero", LINK.target, "newsletter"),
    ],
)
def test_changing_any_part_of_a_link_breaks_its_signature(changed: Link) -> None:
    with pytest.raises(SignatureError) as error:
        verify_link(SECRET, changed, sign_link(SECRET, LINK))
    assert error.value.reason == "link_bad_signature"


def test_an_unsigned_link_is_refused() -> None:
    with pytest.raises(SignatureError, match="link_unsigned"):
        verify_link(SECRET, LINK, "")


def test_one_universe_key_cannot_sign_another_universe() -> None:
    # Same fields but the universe: the derived keys differ, so do the signatures.
    assert sign_link(SECRET, LINK) != sign_link(
        SECRET, Link("other", "cust-1", "spring", "hero", LINK.target, "newsletter")
    )


def test_link_url_carries_every_field_and_the_signature() -> None:
    url = link_url("https://t.example", SECRET, LINK)
    assert url.startswith(
        "https://t.example/click?u=shop&c=cust-1&k=spring&l=hero&p=newsletter&url="
    )
    assert url.endswith("&s=" + sign_link(SECRET, LINK))


def test_a_click_token_round_trips() -> None:
    token = make_v1_token(SECRET, CLICK)
    assert (
        read_token(
            SECRET, token, universe="shop", now_ms=CLICK.clicked_at_ms + DAY, window_ms=30 * DAY
        )
        == CLICK
    )


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "context_forged"),
        (lambda t: "x" + t, "context_malformed"),
        (lambda t: "garbage", "context_malformed"),
        (lambda t: t.split(".")[0] + ".", "context_forged"),
    ],
)
def test_tampered_tokens_are_refused(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    token = mutate(make_v1_token(SECRET, CLICK))
    with pytest.raises(SignatureError) as error:
        read_token(SECRET, token, universe="shop", now_ms=CLICK.clicked_at_ms, window_ms=DAY)
    assert error.value.reason == reason


def test_a_token_signed_with_another_secret_is_forged() -> None:
    token = make_v1_token("t" * 40, CLICK)
    with pytest.raises(SignatureError, match="context_forged"):
        read_token(SECRET, token, universe="shop", now_ms=CLICK.clicked_at_ms, window_ms=DAY)


def test_expired_and_foreign_tokens_are_refused() -> None:
    token = make_v1_token(SECRET, CLICK)
    with pytest.raises(SignatureError, match="context_expired"):
        read_token(
            SECRET,
            token,
            universe="shop",
            now_ms=CLICK.clicked_at_ms + 31 * DAY,
            window_ms=30 * DAY,
        )
    with pytest.raises(SignatureError, match="context_other_universe"):
        read_token(SECRET, token, universe="other", now_ms=CLICK.clicked_at_ms, window_ms=DAY)


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://shop.example/landing?a=1#top", True),
        ("http://shop.example", True),
        ("javascript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("//evil.example/", False),
        ("/relative", False),
        ("https://shop.example/\r\nSet-Cookie: x=y", False),
        ("https://shop.example/a b", False),
        ("ftp://shop.example/", False),
        ("https://" + "a" * 3000 + ".example/", False),
    ],
)
def test_only_absolute_http_targets_without_control_characters_are_safe(
    url: str, safe: bool
) -> None:
    assert safe_target(url) is safe


@pytest.mark.parametrize(
    "url",
    [
        "https://good.example@evil.example/",
        "https://user:pw@shop.example/",
        "https://@shop.example/",
        "http://shop.example:80@evil.example/",
        "https://evil.example\\@good.example/",
        "https://evil.example\\.good.example/",
        "https://[::1/",
        "https://shop.example/\udcff",
    ],
    ids=["good-at-evil", "user-password", "empty-user", "port-like-user", "backslash-at",
         "backslash", "open-ipv6", "surrogate"],
)  # fmt: skip
def test_targets_with_user_info_or_a_confusable_host_are_not_safe(url: str) -> None:
    assert safe_target(url) is False


def test_non_ascii_targets_are_safe() -> None:
    assert safe_target("https://shop.example/café?q=ü") is True


@pytest.mark.parametrize("signature", ["\udcff\udcfe", "é" * 22, "A" * 21 + "\udcff"])
def test_a_non_ascii_token_signature_is_malformed_not_an_error(signature: str) -> None:
    payload = make_v1_token(SECRET, CLICK).partition(".")[0]
    with pytest.raises(SignatureError) as error:
        read_token(
            SECRET, f"{payload}.{signature}", universe="shop", now_ms=CLICK.clicked_at_ms,
            window_ms=DAY,
        )  # fmt: skip
    assert error.value.reason == "context_malformed"


def test_a_non_ascii_link_signature_is_a_bad_signature_not_an_error() -> None:
    with pytest.raises(SignatureError, match="link_bad_signature"):
        verify_link(SECRET, LINK, "é" * 22)
