"""A page as a real browser renders it: Debian's headless ``chromium``, its DOM or a PNG.

``--virtual-time-budget`` lets the page's scripts and fetches run to completion (the
dashboard's queries) before the DOM is dumped or the screenshot taken.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_BUDGET_MS = 15_000


class BrowserError(RuntimeError):
    """Chromium is missing or failed; the message says which and its output."""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError("chromium is not installed: `make tools` (apt-get install chromium)")


def _run(url: str, *args: str, timeout: float) -> str:
    # Its own profile folder: no state shared with another run (or a desktop browser).
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", f"--virtual-time-budget={_BUDGET_MS}", *args, url,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise BrowserError(f"chromium did not finish within {timeout:.0f}s") from e
    if result.returncode != 0:
        raise BrowserError(f"chromium exited with {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def dump_dom(url: str, timeout: float = 60.0) -> str:
    return _run(url, "--dump-dom", timeout=timeout)


def screenshot(url: str, path: Path, width: int = 1200, height: int = 1750) -> None:
    _run(url, f"--screenshot={path.resolve()}", f"--window-size={width},{height}", timeout=60)
    if not path.exists() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {path}")


@dataclass(frozen=True)
class RenderedChart:
    """What the /dashboard page shows for one chart."""

    title: str
    error: str  # the page's error text for it ("" when none)
    drawn: bool  # a uPlot chart was drawn


_CHART = re.compile(r'<div class="chart"')
_TITLE = re.compile(r'<div class="title"[^>]*>([^<]*)<')
_ERROR = re.compile(r'<div class="query-error"[^>]*>([^<]*)<')


def rendered_charts(dom: str) -> list[RenderedChart]:
    """The charts of a dumped /dashboard page, in order (its markup: a ``div.chart`` holding
    a ``div.title``, a ``div.query-error`` and, once drawn, a ``div.uplot``)."""
    charts = []
    for part in _CHART.split(dom)[1:]:
        title, error = _TITLE.search(part), _ERROR.search(part)
        charts.append(
            RenderedChart(
                title=html.unescape(title.group(1)) if title else "",
                error=html.unescape(error.group(1)).strip() if error else "",
                drawn='class="uplot' in part,
            )
        )
    return charts


def page_error(dom: str) -> str:
    """The page's banner error ("" when none)."""
    match = re.search(r'id="global-error"[^>]*>([^<]*)<', dom)
    return html.unescape(match.group(1)).strip() if match else ""
