"""`make demo`: the SQL example of docs/analysts.md (alice, bob, carol) sent through the edge.

Real traffic, as a merchant's site makes it: each customer follows a signed tracked link, the
sales come from the pixel (with the click cookie, or the `click` parameter) and from the API;
then it waits until the projector has written every call and prints the example's queries.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import orjson

from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from schemas.context import shell_environ
from schemas.environ import ConfigError, Environ
from schemas.signing import Link, link_url

UNIVERSE = "demo"
LANDING = "https://shop.example/landing"
CLICKS = (("alice", "spring", "hero"), ("bob", "spring", "footer"), ("carol", "summer", "hero"))
TRANSACTIONS = ("o-1", "o-2", "o-3", "o-4", "o-5", "o-6")
# The example's queries (docs/analysts.md), in its order.
QUERIES = (
    "SELECT campaign_id, currency, purchases, turnover FROM tracker.campaign_turnover\n"
    "WHERE universe = 'demo' ORDER BY turnover DESC",
    "SELECT campaign_id, link_id, currency, purchases, turnover FROM tracker.link_turnover\n"
    "WHERE universe = 'demo' ORDER BY campaign_id, link_id",
    "SELECT customer_id, currency, purchases, turnover FROM tracker.customer_turnover\n"
    "WHERE universe = 'demo' ORDER BY customer_id",
    "SELECT * FROM tracker.customers_by_turnover(universe='demo', currency='EUR', min=100,"
    " max=1000)",
    "SELECT day, purchases, turnover FROM tracker.campaign_turnover_daily\n"
    "WHERE campaign_id = 'spring' AND currency = 'EUR' ORDER BY day",
    "SELECT status, count() FROM tracker.sales_calls GROUP BY status ORDER BY status",
)


class DemoError(RuntimeError):
    """The stack did not take the demo's traffic; the message says what to do."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: object, **__: object) -> None:
        return None  # the 302 itself is what a browser would keep: cookie and Location


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class Target:
    """Where the running stack listens, and what its edge signs and authenticates with."""

    edge: str
    clickhouse: str
    database: str
    secret: str
    api_key: str
    secrets_file: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Target:
        context = shell_environ(environ)
        env = Environ(context.environ)
        if not context.from_stack and not context.environ.get("TRACKER_SECRET"):
            raise DemoError(f"no local stack here ({context.path} is missing): `make up`")
        keys = [k.partition(":") for k in env.text("TRACKER_API_KEYS", "").split(",") if k]
        api_key = next((key for universe, _, key in keys if universe == UNIVERSE), "")
        if not api_key:
            raise DemoError(f"TRACKER_API_KEYS has no key for universe {UNIVERSE!r}")
        edge = EdgeSettings.from_env(context.environ)
        projector = ProjectorSettings.from_env(context.environ)
        return cls(
            edge=edge.public_url,
            clickhouse=projector.clickhouse_url,
            database=projector.clickhouse_database,
            secret=edge.secret,
            api_key=api_key,
            secrets_file=context.path,
        )

    def query(self, sql: str) -> list[list[str]]:
        sql = sql.replace("tracker.", f"{self.database}.")
        url = f"{self.clickhouse}/?" + urllib.parse.urlencode({"query": sql})
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own URL
            text: str = response.read().decode()
        return [line.split("\t") for line in text.splitlines()]


@dataclass(frozen=True)
class Visit:
    """What a customer's browser holds after following a tracked link."""

    cookie: str  # the `trk_demo=...` pair to send back
    click: str  # the trk_click token the landing page received


def follow(target: Target, customer: str, campaign: str, link: str, product: str = "") -> Visit:
    url = link_url(
        target.edge, target.secret, Link(UNIVERSE, customer, campaign, link, LANDING, product)
    )
    try:
        _opener.open(url, timeout=10)
    except urllib.error.HTTPError as answer:
        if answer.code != 302:
            raise DemoError(f"the edge answered {answer.code} to a signed link: {url}") from None
        jar: SimpleCookie = SimpleCookie()
        jar.load(answer.headers["Set-Cookie"] or "")
        morsel = jar[f"trk_{UNIVERSE}"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.headers["Location"]).query)
        return Visit(cookie=f"{morsel.key}={morsel.coded_value}", click=query["trk_click"][0])
    raise DemoError(f"the edge did not redirect a signed link: {url}")


def pixel(target: Target, query: str, cookie: str = "") -> None:
    request = urllib.request.Request(f"{target.edge}/sales.php?{query}")  # noqa: S310
    if cookie:
        request.add_header("Cookie", cookie)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own URL
        if response.headers.get("Content-Type") != "image/gif":
            raise DemoError(f"the pixel answered {response.headers.get('Content-Type')}")


def api_sale(target: Target, sale: dict[str, str]) -> None:
    _api_post(target, "/v1/sales", sale)


def api_refund(target: Target, refund: dict[str, str]) -> None:
    """A refund through ``POST /v1/refunds`` (well formed: whether it counts is the
    projector's decision, in ``refunds_calls``)."""
    _api_post(target, "/v1/refunds", refund)


def _api_post(target: Target, path: str, item: dict[str, str]) -> None:
    request = urllib.request.Request(  # noqa: S310 - our own URL
        f"{target.edge}{path}",
        data=orjson.dumps(item),
        headers={"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own URL
        answer = orjson.loads(response.read())
    if answer.get("accepted") != 1:
        raise DemoError(f"the API did not accept {item}: {answer}")


def wait_until(target: Target, sql: str, done: str, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = "\t".join(target.query(sql)[0])
        except (OSError, IndexError) as e:
            seen = str(e)
        if seen == done:
            return
        time.sleep(0.2)
    raise DemoError(f"{what} not in ClickHouse after {timeout:.0f}s (last: {seen}); `make status`")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def already_loaded(target: Target) -> bool:
    sql = (
        f"SELECT count() FROM tracker.sales_calls WHERE universe = '{UNIVERSE}' "  # noqa: S608
        f"AND transaction_id IN {_in(TRANSACTIONS)}"
    )
    return target.query(sql) != [["0"]]


def load(target: Target, *, timeout: float = 60.0) -> None:
    """Send the story through the edge and wait until every view shows it."""
    # The clicks first, and stored before the sales: the API sale (carol's) carries no
    # click context, so it is attributed from the clicks ClickHouse holds.
    visits = {customer: follow(target, customer, c, link) for customer, c, link in CLICKS}
    customers = tuple(visits)
    wait_until(
        target,
        f"SELECT uniqExact(customer_id) FROM tracker.clicks WHERE universe = '{UNIVERSE}' "  # noqa: S608
        f"AND customer_id IN {_in(customers)}",
        str(len(customers)), "the three clicks", timeout,
    )  # fmt: skip
    u = f"universe={UNIVERSE}"
    eur = f"{u}&currency=EUR"
    alice = visits["alice"].cookie
    pixel(target, f"{eur}&amount=120.00&id=o-1", cookie=alice)  # alice's order...
    pixel(target, f"{eur}&amount=120.00&id=o-1", cookie=alice)  # ...page refreshed: a duplicate
    pixel(target, f"{eur}&amount=80.50&id=o-2", cookie=alice)
    # bob's merchant page cannot rely on third-party cookies: it passes the click id on.
    pixel(target, f"{eur}&amount=1500&id=o-3&click={urllib.parse.quote(visits['bob'].click)}")
    api_sale(target, {"amount": "40", "id": "o-4", "customer": "carol", "currency": "EUR"})
    # An anonymous visitor paying in dollars: a row of its own, never added to the euros.
    pixel(target, f"{u}&currency=USD&amount=9.99&id=o-5")
    pixel(target, f"{u}&amount=1.000,00&id=o-6")  # ambiguous: rejected as amount_malformed
    # Each view is filled by the same insert as sales_calls, a few ms after it: wait for all.
    story = f"universe = '{UNIVERSE}' AND transaction_id IN {_in(TRANSACTIONS)}"
    demo = f"universe = '{UNIVERSE}'"
    wait_until(
        target,
        f"SELECT (SELECT count() FROM tracker.sales_calls WHERE {story}) >= 7"  # noqa: S608
        f" AND (SELECT count() FROM tracker.sales WHERE {story}) >= 5"
        f" AND (SELECT sum(purchases) FROM tracker.campaign_turnover WHERE {demo}) >= 5"
        f" AND (SELECT sum(purchases) FROM tracker.link_turnover WHERE {demo}) >= 5"
        f" AND (SELECT sum(purchases) FROM tracker.customer_turnover WHERE {demo}"
        f"      AND customer_id IN {_in(customers)}) >= 4"
        f" AND (SELECT sum(purchases) FROM tracker.campaign_turnover_daily WHERE {demo}"
        "       AND campaign_id IN ('spring', 'summer')) >= 4",
        "1", "the demo's sales", timeout,
    )  # fmt: skip


def show(target: Target) -> None:
    for sql in QUERIES:
        print(f"\n{sql};")
        for row in target.query(sql):
            print("-- " + "  ".join(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.demo", description=__doc__)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        target = Target.from_env(os.environ)
        try:
            if already_loaded(target):
                print("the demo is already loaded (its transactions are counted once):")
                show(target)
                return 0
            others = target.query("SELECT count() FROM tracker.sales_calls")
        except OSError as e:
            raise DemoError(f"ClickHouse does not answer at {target.clickhouse}: `make up`") from e
        print(f"sending the example of docs/analysts.md through the edge at {target.edge} ...")
        load(target, timeout=args.timeout)
        print("done: the example's queries now answer")
        show(target)
        if others != [["0"]]:
            print(
                f"\nnote: sales_calls held {others[0][0]} other calls before the demo (the try-it "
                "calls?): the figures above include them; docs/analysts.md's are those of an empty "
                "stack (`make down`, move .data away, `make up`, `make demo`)"
            )
    except (DemoError, ConfigError) as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"demo: the edge does not answer ({e}); is the stack up? `make up`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
