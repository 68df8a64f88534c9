"""`python -m ingest sign-link`: a tracked link, signed for the edge this shell talks to.

Without settings of its own, the shell talks to the local stack (``schemas/context.py``): its
secret and its edge's address, so `make up` then `sign-link` just works.
"""

from __future__ import annotations

import argparse
import sys

from ingest.settings import EdgeSettings
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
    print(f"signed with {source}", file=sys.stderr)
    print(link_url(settings.public_url, settings.secret, link))
    return 0
