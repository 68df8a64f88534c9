"""Tracked links, the click cookie and the click id, against the real broker."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgspec
import pytest
from yarl import URL

from helpers import Edge, clicks_as_read, read_topic, sales_as_read
from ingest.click import CLICK_PARAMETER
from ingest.settings import EdgeSettings
from projector.interpret import interpret_sale
from revealing import revealed
from schemas.click_token import read_token
from schemas.events import ClickContext
from schemas.raw import decode_click_request, decode_sale_request
from schemas.rules import Rules
from schemas.signing import Link, link_url, make_v1_token, sign_link

ROOT = Path(__file__).resolve().parents[2]
TARGET = "https://shop.example/landing?utm=mail#offer"


def tracked(settings: EdgeSettings, base: str, **changes: str) -> str:
    link = msgspec.structs.replace(
        Link("demo", "alice", "spring", "hero", TARGET, "newsletter"), **changes
    )
    return link_url(base, settings.secret, link)


async def follow(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
        await response.read()
        return response


async def test_a_valid_link_publishes_the_click_sets_the_cookie_and_redirects(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    response = await follow(edge.session, tracked(edge_settings, edge.base))

    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path, location.fragment) == (
        "https", "shop.example", "/landing", "offer"
    )  # fmt: skip
    query = parse_qs(location.query)
    assert query["utm"] == ["mail"]
    token = query[CLICK_PARAMETER][0]

    cookie = SimpleCookie(response.headers["Set-Cookie"])["trk_demo"]
    assert cookie.value == token
    assert cookie["httponly"] is True and cookie["secure"] is True
    assert cookie["samesite"] == "None"
    assert cookie["max-age"] == str(30 * 86400)
    assert cookie["path"] == "/"
    assert "domain" not in cookie or not cookie["domain"]  # host-only

    [record] = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.clicks, 1
    )
    raw = decode_click_request(record.value)
    assert raw is not None  # published as received: the link's query, the click id, the time
    assert raw.query == urlsplit(tracked(edge_settings, "")).query
    assert (
        raw.event_id
        == read_token(
            edge_settings.secret, token, universe="demo", now_ms=raw.clicked_at_ms, window_ms=1
        ).click_id
    )
    [click] = clicks_as_read([record], edge_settings.secret)
    assert (click.universe, click.customer_id, click.campaign_id, click.link_id, click.product) == (
        "demo", "alice", "spring", "hero", "newsletter"
    )  # fmt: skip
    assert record.key == b"demo\x1falice"
    assert len(click.client_hash) == 16  # hashed, never the address


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("k=spring", "k=summer"),
        lambda url: url.replace("shop.example", "evil.example"),
        lambda url: url[: url.index("&s=")],
        lambda url: url[:-1] + ("A" if url[-1] != "A" else "B"),
        lambda url: url.replace("u=demo", "u=other"),
    ],
    ids=["campaign", "target", "unsigned", "signature", "universe"],
)
async def test_a_tampered_link_redirects_nowhere_sets_nothing_and_is_counted(
    edge_settings: EdgeSettings,
    tamper: Callable[[str], str],
    edge: Edge,
) -> None:
    response = await follow(edge.session, tamper(tracked(edge_settings, edge.base)))
    assert response.status == 400
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    async with edge.session.get(edge.base + "/metrics") as metrics:
        text = await metrics.text()
    assert 'tracker_edge_clicks_total{outcome="link_bad_signature"}' in text or (
        'tracker_edge_clicks_total{outcome="link_unsigned"}' in text
    )
    assert (
        await read_topic(
            edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.clicks, 0, timeout=3
        )
        == []
    )


@pytest.mark.parametrize(
    "target",
    [
        "javascript:alert(1)",
        "https://shop.example/\r\nSet-Cookie: x=y",
        "//evil.example/",
        "data:text/html,x",
    ],
)
async def test_an_unsafe_target_is_refused_even_when_signed(
    edge_settings: EdgeSettings,
    target: str,
    edge: Edge,
) -> None:
    link = Link("demo", "alice", "spring", "hero", target)
    url = link_url(edge.base, edge_settings.secret, link)
    assert url.endswith(sign_link(edge_settings.secret, link))
    response = await follow(edge.session, url)
    assert response.status == 400
    assert "Location" not in response.headers


def test_sign_link_prints_a_working_link_and_refuses_unsafe_targets(
    service_env: dict[str, str],
) -> None:
    env = {**service_env, "TRACKER_EDGE_PUBLIC_URL": "https://t.example"}
    args = ["--universe", "demo", "--customer", "c1", "--campaign", "k", "--link", "l"]
    ok = subprocess.run(
        [sys.executable, "-m", "ingest", "sign-link", *args, "--url", "https://shop.example/"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("https://t.example/click?u=demo&c=c1&k=k&l=l&url=")
    bad = subprocess.run(
        [sys.executable, "-m", "ingest", "sign-link", *args, "--url", "javascript:alert(1)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: cannot sign this link: unsafe_target"


async def test_the_pixel_picks_up_the_cookie_and_the_click_id(
    edge_settings: EdgeSettings, edge: Edge
) -> None:
    # A browser: the click sets the cookie (sent back over https only; set by hand here).
    first = await follow(edge.session, tracked(edge_settings, edge.base))
    cookie_token = SimpleCookie(first.headers["Set-Cookie"])["trk_demo"].value
    later = await follow(
        edge.session, tracked(edge_settings, edge.base, campaign_id="summer", link_id="footer")
    )
    click_id = parse_qs(urlsplit(later.headers["Location"]).query)[CLICK_PARAMETER][0]

    headers = {"Cookie": f"trk_demo={cookie_token}"}
    async with edge.session.get(
        f"{edge.base}/sales.php?universe=demo&amount=10&id=by-cookie", headers=headers
    ) as r:
        assert r.status == 200
    async with edge.session.get(
        f"{edge.base}/sales.php?universe=demo&amount=10&id=by-click&click={click_id}"
    ) as r:
        assert r.status == 200
    # Both: the more recent click wins.
    async with edge.session.get(
        f"{edge.base}/sales.php?universe=demo&amount=10&id=both&click={click_id}", headers=headers
    ) as r:
        assert r.status == 200

    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 3
    )
    calls = {c.transaction_id: c for c in sales_as_read(records, edge_settings.secret)}
    assert (calls["by-cookie"].campaign_id, calls["by-cookie"].link_id) == ("spring", "hero")
    assert (calls["by-click"].campaign_id, calls["by-click"].link_id) == ("summer", "footer")
    assert calls["both"].campaign_id == "summer"
    assert calls["by-cookie"].click_customer_id == "alice"
    assert calls["by-cookie"].clicked_at_ms > 0


async def test_forged_expired_and_foreign_contexts_are_ignored_and_reported(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    now = 1_900_000_000_000
    forged = make_v1_token(
        "another-secret-" + "y" * 30, ClickContext("demo", "c", "k", "l", "", now, "x")
    )
    expired = make_v1_token(edge_settings.secret, ClickContext("demo", "c", "old", "l", "", 1, "x"))
    foreign = make_v1_token(
        edge_settings.secret, ClickContext("other", "c", "k", "l", "", now, "x")
    )
    for i, token in enumerate((forged, expired, foreign, "not-a-token")):
        async with edge.session.get(
            f"{edge.base}/sales.php?universe=demo&amount=1&id=t{i}",
            headers={"Cookie": f"trk_demo={token}"},
        ) as r:
            assert r.status == 200
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 4
    )
    # The edge passes the cookie on untouched; the projector checks it, never trusts it.
    read = {}
    for record in records:
        raw = decode_sale_request(record.value)
        assert raw is not None
        call, seen = interpret_sale(
            raw, secret=edge_settings.secret, window_ms=30 * 86_400_000, rules=Rules()
        )
        read[call.transaction_id] = (call, seen)
    assert [read[f"t{i}"][1] for i in range(4)] == [
        [("cookie", "context_forged")],
        [("cookie", "context_expired")],
        [("cookie", "context_other_universe")],
        [("cookie", "context_malformed")],
    ]
    assert all(
        c.status == "accepted" and c.campaign_id == "" and c.clicked_at_ms == 0
        for c, _ in read.values()
    )


@pytest.mark.parametrize(
    "target", ["https://good.example@evil.example/", "https://user:pw@shop.example/landing"]
)
async def test_a_target_with_user_info_is_refused_even_when_signed(
    edge_settings: EdgeSettings,
    target: str,
    edge: Edge,
) -> None:
    link = Link("demo", "alice", "spring", "hero", target)
    response = await follow(edge.session, link_url(edge.base, edge_settings.secret, link))
    assert response.status == 400
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    async with edge.session.get(edge.base + "/metrics") as metrics:
        text = await metrics.text()
    assert 'tracker_edge_clicks_total{outcome="link_unsafe_target"} 1.0' in text
    assert (
        await read_topic(
            edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.clicks, 0, timeout=3
        )
        == []
    )


@pytest.mark.parametrize(
    "target", ["https://good.example@evil.example/", "https://user:pw@shop.example/"]
)
def test_sign_link_refuses_targets_with_user_info(service_env: dict[str, str], target: str) -> None:
    args = ["--universe", "demo", "--customer", "c1", "--campaign", "k", "--link", "l"]
    bad = subprocess.run(
        [sys.executable, "-m", "ingest", "sign-link", *args, "--url", target],
        cwd=ROOT, env=service_env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: cannot sign this link: unsafe_target"
    assert bad.stdout == ""


async def test_a_non_ascii_target_is_percent_encoded_in_the_location(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    link = Link("demo", "alice", "spring", "hero", "https://shop.example/café?q=ü&r=%2F#é")
    response = await follow(edge.session, link_url(edge.base, edge_settings.secret, link))
    assert response.status == 302
    # aiohttp's client reads header bytes as UTF-8: raw UTF-8 would come back as "é" here.
    location = response.headers["Location"]
    assert location.isascii()
    assert location.startswith("https://shop.example/caf%C3%A9?q=%C3%BC&r=%2F&trk_click=")
    assert location.endswith("#%C3%A9")
    [record] = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.clicks, 1
    )
    assert clicks_as_read([record], edge_settings.secret)[0].link_id == "hero"


async def test_no_token_cookie_or_url_the_edge_emits_shows_the_customer_campaign_or_link(
    edge_settings: EdgeSettings, edge: Edge
) -> None:
    ids = ("cust-5e1f0c", "camp-b7a9d2", "link-3c8e44")
    link = Link("demo", *ids, "https://shop.example/landing?utm_source=mail", "newsletter")
    response = await follow(edge.session, link_url(edge.base, edge_settings.secret, link))
    assert response.status == 302
    emitted = [f"{name}: {value}" for name, value in response.headers.items()]
    async with edge.session.get(edge.base + "/trk.js") as snippet:
        emitted.append(await snippet.text())
    # The landing URL, its token, the cookie and every other header: none shows an id.
    assert [(line[:60], revealed(ids, line)) for line in emitted if revealed(ids, line)] == []
    token = parse_qs(urlsplit(response.headers["Location"]).query)[CLICK_PARAMETER][0]
    click = read_token(
        edge_settings.secret, token, universe="demo", now_ms=time.time_ns() // 1_000_000,
        window_ms=edge_settings.attribution_window_ms,
    )  # fmt: skip
    assert (click.customer_id, click.campaign_id, click.link_id) == ids
