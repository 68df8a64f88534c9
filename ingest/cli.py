"""`python -m ingest sign-link`: a tracked link, signed for the edge this shell talks to;
`python -m ingest snippet`: the shop's script tag, pinned to this release of trk.js.

Without settings of its own, the shell talks to the local stack (``schemas/context.py``): its
secret and its edge's address, so `make up` then `sign-link` just works.
"""

from __future__ import annotations

import argparse
import sys

from ingest.hosts import link_base
from ingest.settings import EdgeSettings
from ingest.snippet import script_tag
from schemas.context import ShellContext
from schemas.environ import ConfigError
from schemas.rules import link_problem
from schemas.signing import Link, link_url


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sign = commands.add_parser(
        "sign-link",
        help="print a signed tracked link (with the local stack's secret when "
        "TRACKER_SECRET is not set)",
    )
    for name in ("universe", "customer", "campaign", "link", "url"):
        sign.add_argument(f"--{name}", required=True)
    sign.add_argument("--product", default="", help="the sending product (optional)")
    hosts_help = "a first-party host of the universe (default: its first one, else the edge's URL)"
    sign.add_argument("--host", default="", help=hosts_help)
    tag = commands.add_parser(
        "snippet", help="print the shop's <script> tag, pinned to this release of trk.js"
    )
    tag.add_argument("--universe", default="", help="on this universe's first-party host")
    tag.add_argument("--host", default="", help=hosts_help)


def secret_source(context: ShellContext) -> str:
    """Where the secret comes from, for the line printed on stderr."""
    if "TRACKER_SECRET" in context.from_stack:
        return f"the local stack's secret from {context.path} (TRACKER_SECRET is not set)"
    if not context.environ.get("TRACKER_SECRET"):
        raise ConfigError(
            f"TRACKER_SECRET is required: set it, or start the local stack (`make up`), "
            f"which keeps its secret in {context.path}"
        )
    source = "TRACKER_SECRET from the environment"
    if context.stack.get("TRACKER_SECRET") not in (None, context.environ["TRACKER_SECRET"]):
        source += (
            f" (not the local stack's secret in {context.path}: its edge refuses these links "
            "unless it was started with this TRACKER_SECRET)"
        )
    return source


def sign_link(args: argparse.Namespace, context: ShellContext) -> int:
    source = secret_source(context)
    settings = EdgeSettings.from_env(context.environ)
    link = Link(args.universe, args.customer, args.campaign, args.link, args.url, args.product)
    problem = link_problem(link)
    if problem:
        print(f"error: cannot sign this link: {problem.removeprefix('link_')}", file=sys.stderr)
        return 2
    # On the universe's first-party host when it has one: the click cookie is then the shop's.
    base = link_base(settings.public_url, settings.first_party_hosts, link.universe, args.host)
    print(f"signed with {source}", file=sys.stderr)
    print(link_url(base, settings.secret, link))
    return 0


def snippet(args: argparse.Namespace, context: ShellContext) -> int:
    settings = EdgeSettings.from_env(context.environ)
    base = settings.public_url
    universe = args.universe or settings.first_party_hosts.get(args.host.lower(), "")
    if universe:
        base = link_base(base, settings.first_party_hosts, universe, args.host)
    print(script_tag(base))
    return 0
