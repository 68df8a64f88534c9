"""The shops' own tracking hostnames: cookie attributes, certificates asked for, links signed."""

from __future__ import annotations

import subprocess
import sys
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from helpers import eventually, running_edge
from ingest.hosts import click_cookie_samesite, hostname, link_base
from ingest.settings import EdgeSettings
from schemas.environ import ConfigError
from schemas.signing import Link, link_url

ROOT = Path(__file__).resolve().parents[2]
HOSTS = "demo:track.shop.example,demo:t.shop2.example,acme:track.acme.example"


def settings_with_hosts(env: dict[str, str], hosts: str = HOSTS) -> EdgeSettings:
    return EdgeSettings.from_env({**env, "TRACKER_EDGE_FIRST_PARTY_HOSTS": hosts})


def test_any_number_of_hosts_for_any_number_of_universes_are_read(
    service_env: dict[str, str],
) -> None:
    assert settings_with_hosts(service_env).first_party_hosts == {
        "track.shop.example": "demo", "t.shop2.example": "demo", "track.acme.example": "acme",
    }  # fmt: skip
    assert settings_with_hosts(service_env, "").first_party_hosts == {}


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("track.shop.example", "universe:host"),
        ("demo:https://track.shop.example", "not a hostname"),
        ("demo:track.shop.example:8443", "not a hostname"),
        ("demo:localhost", "not a hostname"),
        ("demo:a.example,acme:A.example", "two universes"),
    ],
)
def test_a_malformed_host_list_is_a_configuration_error(
    service_env: dict[str, str], hosts: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_with_hosts(service_env, hosts)


def test_the_cookie_is_lax_on_a_shops_host_and_none_on_the_edges_own() -> None:
    hosts = {"track.shop.example": "demo"}
    assert click_cookie_samesite(hosts, "Track.Shop.Example:8443") == "Lax"
    assert click_cookie_samesite(hosts, "tracker.example") == "None"
    assert click_cookie_samesite(hosts, "[::1]:8080") == "None"
    assert hostname("[::1]:8080") == "[::1]"


def test_links_point_at_the_universes_own_host_when_it_has_one() -> None:
    hosts = {"track.shop.example": "demo", "t.shop2.example": "demo"}
    assert link_base("https://t.example", hosts, "demo") == "https://track.shop.example"
    assert link_base("https://t.example", hosts, "demo", "T.shop2.example") == (
        "https://t.shop2.example"
    )
    assert link_base("https://t.example", hosts, "acme") == "https://t.example"
    with pytest.raises(ConfigError, match="not a first-party host of universe 'acme'"):
        link_base("https://t.example", hosts, "acme", "track.shop.example")


def test_sign_link_and_snippet_print_urls_on_the_shops_host(service_env: dict[str, str]) -> None:
    env = {**service_env, "TRACKER_EDGE_FIRST_PARTY_HOSTS": HOSTS}
    args = ["--universe", "demo", "--customer", "c1", "--campaign", "k", "--link", "l"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ingest", *argv], cwd=ROOT, env=env, capture_output=True,
            text=True, check=False,
        )  # fmt: skip

    default = run("sign-link", *args, "--url", "https://shop.example/")
    assert default.stdout.startswith("https://track.shop.example/click?u=demo&c=c1"), default
    chosen = run("sign-link", *args, "--url", "https://shop.example/", "--host", "t.shop2.example")
    assert chosen.stdout.startswith("https://t.shop2.example/click?"), chosen
    tag = run("snippet", "--host", "track.acme.example")
    assert tag.stdout.startswith('<script src="https://track.acme.example/trk.'), tag
    assert 'integrity="sha384-' in tag.stdout


async def test_a_click_on_a_shops_host_sets_a_lax_host_only_cookie_and_caddy_may_ask(
    service_env: dict[str, str],
) -> None:
    settings = settings_with_hosts(service_env)
    async with running_edge(settings) as base, aiohttp.ClientSession() as session:

        async def ready() -> int:
            async with session.get(base + "/readyz") as r:
                return r.status

        await eventually(ready, lambda status: status == 200)
        link = Link("demo", "alice", "spring", "hero", "https://shop.example/")
        url = URL(link_url(base, settings.secret, link), encoded=True)
        cookies = {}
        for host, expected in (("track.shop.example", "Lax"), ("127.0.0.1", "None")):
            async with session.get(url, headers={"Host": host}, allow_redirects=False) as r:
                assert r.status == 302
                cookie = SimpleCookie(r.headers["Set-Cookie"])["trk_demo"]
                cookies[host] = (cookie["samesite"], cookie["secure"], cookie["httponly"])
                assert not cookie["domain"]
                assert cookie["max-age"] == str(30 * 86400)
            assert cookies[host] == (expected, True, True)

        answers = {}
        for domain in ("track.shop.example", "TRACK.ACME.EXAMPLE", "evil.example", ""):
            async with session.get(f"{base}/v1/tls/allowed", params={"domain": domain}) as r:
                answers[domain] = r.status
        assert answers == {
            "track.shop.example": 200, "TRACK.ACME.EXAMPLE": 200, "evil.example": 404, "": 404,
        }  # fmt: skip
