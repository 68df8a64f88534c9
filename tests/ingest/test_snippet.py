"""``GET /trk.js``: small, dependency-free, no eval, cached by its versioned URL."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from helpers import Edge
from ingest.snippet import INTEGRITY, SOURCE, VERSION, VERSIONED_PATH, script_tag

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 3072


def test_the_snippet_is_small_and_its_size_is_the_one_the_docs_state() -> None:
    assert len(SOURCE) <= MAX_BYTES
    docs = (ROOT / "docs" / "shop-setup.md").read_text()
    assert f"{len(SOURCE):,} bytes" in docs, "docs/shop-setup.md must state trk.js's size"
    assert f"{len(gzip.compress(SOURCE, 9)):,} bytes gzipped" in docs


def test_the_snippet_evaluates_no_string_and_loads_nothing_else() -> None:
    text = SOURCE.decode()
    # Nothing a strict CSP refuses without 'unsafe-eval', and no other script or library.
    for forbidden in (r"\beval\s*\(", r"\bFunction\s*\(", r"setTimeout\s*\(\s*['\"]",
                      r"setInterval", r"\bimport\s*\(", r"createElement\(\s*['\"]script",
                      r"innerHTML", r"document\.write", r"https?://"):  # fmt: skip
        assert not re.search(forbidden, text), forbidden


async def test_the_plain_url_is_cached_briefly_and_the_versioned_one_for_a_year(
    edge: Edge,
) -> None:
    answers = {}
    for path in ("/trk.js", VERSIONED_PATH, "/trk.0123456789ab.js"):
        async with edge.session.get(edge.base + path) as r:
            answers[path] = (r.status, r.headers["Cache-Control"], await r.read())
            assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["ETag"] == f'"{VERSION}"'
    assert answers == {
        "/trk.js": (200, "public, max-age=300", SOURCE),
        VERSIONED_PATH: (200, "public, max-age=31536000, immutable", SOURCE),
        # A page pinned to an older release keeps tracking, with today's snippet.
        "/trk.0123456789ab.js": (200, "public, max-age=300", SOURCE),
    }
    async with edge.session.get(
        edge.base + "/trk.js", headers={"If-None-Match": f'"{VERSION}"'}
    ) as r:
        assert (r.status, await r.read()) == (304, b"")


def test_the_script_tag_pins_the_version_with_its_integrity() -> None:
    assert script_tag("https://track.shop.example") == (
        f'<script src="https://track.shop.example/trk.{VERSION}.js" integrity="{INTEGRITY}" '
        'crossorigin="anonymous"></script>'
    )
