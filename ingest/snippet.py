"""``GET /trk.js``: the shop's snippet (``ingest/trk.js``), served as it is in the repository.

Two URLs: ``/trk.js``, the fixed one shops' pages name, cached briefly so a release reaches
every page within minutes; and ``/trk.<version>.js``, whose version is the content's hash,
cached for a year as immutable (and fit for Subresource Integrity). A versioned URL that is
no longer current still answers, with today's snippet and the short cache, so a page that
pinned an old one keeps tracking.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files
from typing import Final

from aiohttp import web

SOURCE: Final = files("ingest").joinpath("trk.js").read_bytes()
VERSION: Final = hashlib.sha256(SOURCE).hexdigest()[:12]
# For <script integrity=...>: the hash of the exact bytes served.
INTEGRITY: Final = "sha384-" + base64.b64encode(hashlib.sha384(SOURCE).digest()).decode()
PLAIN_PATH: Final = "/trk.js"
VERSIONED_PATH: Final = f"/trk.{VERSION}.js"
SHORT_CACHE: Final = "public, max-age=300"
LONG_CACHE: Final = "public, max-age=31536000, immutable"
_ETAG: Final = f'"{VERSION}"'


def _headers(cache_control: str) -> dict[str, str]:
    return {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": cache_control,
        "ETag": _ETAG,
        "X-Content-Type-Options": "nosniff",
        # Loaded by the shop's pages: any site may embed it, and check it with integrity=
        # (a CORS request when crossorigin is set).
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Access-Control-Allow-Origin": "*",
    }


async def serve_snippet(request: web.Request) -> web.Response:
    version = request.match_info.get("version")
    headers = _headers(LONG_CACHE if version == VERSION else SHORT_CACHE)
    if _ETAG in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=SOURCE, headers=headers)


def script_tag(base_url: str) -> str:
    """The tag to put on every page of a shop, pinned to this release of the snippet."""
    return (
        f'<script src="{base_url}{VERSIONED_PATH}" integrity="{INTEGRITY}" '
        'crossorigin="anonymous"></script>'
    )
