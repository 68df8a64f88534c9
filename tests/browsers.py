"""Real browsers for the journey tests: Debian's chromium over its DevTools protocol and
firefox-esr over WebDriver BiDi, both built in, driven with aiohttp's websocket client.

One :class:`Browser` is one browser process with its own fresh profile, kept for a whole
journey (several pages share its cookies and storage as a person's browser would). A browser
that cannot start raises :class:`BrowserError`: the tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp

Profile = Literal["chromium", "chromium-no-third-party-cookies", "firefox"]
PROFILES: Final[tuple[Profile, ...]] = ("chromium", "chromium-no-third-party-cookies", "firefox")
START_TIMEOUT_S: Final = 60.0
STEP_TIMEOUT_S: Final = 30.0


class BrowserError(RuntimeError):
    """A browser is missing, did not start, or a page step failed; says which."""


def _executable(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError(f"{names[0]} is not installed: `make tools` installs it")


class Browser:
    """One page of a real browser: navigate, follow links, evaluate, see its errors."""

    def __init__(self, name: Profile, process: subprocess.Popen[bytes], profile_dir: Path) -> None:
        self.name = name
        self.errors: list[str] = []  # uncaught exceptions and errors the page's scripts logged
        self._process = process
        self._profile_dir = profile_dir
        self._http = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    # -- the protocol: one websocket, commands answered by id, events seen as they come ------

    async def _connect(self, url: str) -> None:
        self._ws = await self._http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read(self._ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            waiting = self._pending.pop(data.get("id", -1), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(data)
            elif "method" in data:
                self._event(data["method"], data.get("params", {}))
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(BrowserError(f"{self.name} closed its protocol socket"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        raise NotImplementedError

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        command_id = next(self._ids)
        answer = self._pending[command_id] = asyncio.get_running_loop().create_future()
        await self._ws.send_str(json.dumps({"id": command_id, "method": method, "params": params}))
        data = await asyncio.wait_for(answer, STEP_TIMEOUT_S)
        if "error" in data:
            raise BrowserError(f"{self.name} {method}: {data['error']} {data.get('message', '')}")
        result: dict[str, Any] = data["result"]
        return result

    # -- what a journey does --------------------------------------------------------------------

    async def navigate(self, url: str) -> None:
        """Go to ``url`` as a person following a link from outside (an e-mail), to the end
        of its redirects and its load event."""
        raise NotImplementedError

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page."""
        raise NotImplementedError

    async def reload(self) -> None:
        raise NotImplementedError

    async def follow(self, selector: str) -> None:
        """Click the link ``selector`` on the page and wait for the next page's load."""
        await self._from_page(f"document.querySelector({json.dumps(selector)}).click()")

    async def go(self, url: str) -> None:
        """Go to ``url`` from the page (as its own script or a form would) and wait for it."""
        await self._from_page(f"location.assign({json.dumps(url)})")

    async def _from_page(self, action: str) -> None:
        before = await self.evaluate("performance.timeOrigin")
        await self.evaluate(f"({action}, 0)")
        await self.wait_for(
            f"performance.timeOrigin !== {before!r} && document.readyState === 'complete'"
        )

    async def wait_for(self, expression: str, timeout: float = STEP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.evaluate(expression):
                    return
            except BrowserError:  # between two pages: no context to evaluate in yet
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"{self.name}: {expression} still false after {timeout}s")
            await asyncio.sleep(0.05)

    async def pixel_calls(self) -> int:
        """How many calls of the sale pixel this page has completed (its resource timings,
        images the script made included)."""
        return int(
            await self.evaluate(
                "performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/sales.php?')).length"
            )
        )

    async def close(self) -> None:
        try:
            if self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._close_browser(), 5)
                await self._ws.close()
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._reader, 5)
        finally:
            await self._http.close()
            await asyncio.to_thread(_stop, self._process)
            shutil.rmtree(self._profile_dir, ignore_errors=True)

    async def _close_browser(self) -> None:
        raise NotImplementedError


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The browser's own process group: its renderers and helpers go with it.
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


_WRAP: Final = "JSON.stringify((() => {{ return ({}); }})())"


class Chromium(Browser):
    """Chromium over the DevTools protocol (one page target)."""

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if entry.get("source") in ("javascript", "security"):
                self.errors.append(entry["text"])

    async def navigate(self, url: str) -> None:
        result = await self.command("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"{self.name} could not open {url}: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'")

    async def reload(self) -> None:
        before = await self.evaluate("performance.timeOrigin")
        await self.command("Page.reload")
        await self.wait_for(
            f"performance.timeOrigin !== {before!r} && document.readyState === 'complete'"
        )

    async def evaluate(self, expression: str) -> Any:
        result = await self.command(
            "Runtime.evaluate", expression=_WRAP.format(expression), returnByValue=True,
            awaitPromise=True,
        )  # fmt: skip
        if "exceptionDetails" in result:
            raise BrowserError(f"{self.name}: {expression}: {result['exceptionDetails']['text']}")
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    async def _close_browser(self) -> None:
        await self.command("Browser.close")


class Firefox(Browser):
    """Firefox over WebDriver BiDi (one browsing context)."""

    context = ""

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "log.entryAdded" and params.get("level") == "error":
            self.errors.append(params.get("text", ""))

    async def navigate(self, url: str) -> None:
        await self.command(
            "browsingContext.navigate", context=self.context, url=url, wait="complete"
        )

    async def reload(self) -> None:
        await self.command("browsingContext.reload", context=self.context, wait="complete")

    async def evaluate(self, expression: str) -> Any:
        result = await self.command(
            "script.evaluate", expression=_WRAP.format(expression), awaitPromise=True,
            target={"context": self.context},
        )  # fmt: skip
        if result["type"] == "exception":
            raise BrowserError(f"{self.name}: {expression}: {result['exceptionDetails']['text']}")
        value = result["result"]
        return json.loads(value["value"]) if value.get("type") == "string" else None

    async def _close_browser(self) -> None:
        await self.command("browser.close")


# -- starting one --------------------------------------------------------------------------------


def _chromium_command(profile: Profile, directory: Path) -> list[str]:
    if profile == "chromium-no-third-party-cookies":
        # What the settings page writes for "Block third-party cookies" (Safari's default).
        default = directory / "Default"
        default.mkdir(parents=True)
        (default / "Preferences").write_text(
            json.dumps({"profile": {"cookie_controls_mode": 1, "block_third_party_cookies": True}})
        )
    return [
        _executable("chromium", "chromium-browser"), "--headless", "--no-sandbox",
        "--disable-gpu", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update",
        # Caddy's internal CA signs the first-party set-up's certificates; trusting it is no
        # privacy rule, which stays the profile's default.
        "--ignore-certificate-errors",
        "--remote-debugging-port=0", f"--user-data-dir={directory}", "about:blank",
    ]  # fmt: skip


# Only what keeps a fresh profile from opening first-run pages or phoning home; no privacy
# preference is touched (Enhanced Tracking Protection "standard", Total Cookie Protection on).
_FIREFOX_PREFS: Final = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
}


def _firefox_command(directory: Path) -> list[str]:
    prefs = "".join(
        f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in _FIREFOX_PREFS.items()
    )
    (directory / "user.js").write_text(prefs)
    return [
        _executable("firefox-esr", "firefox"), "--headless", "--no-remote",
        "--profile", str(directory), "--remote-debugging-port", "0", "about:blank",
    ]  # fmt: skip


_FIREFOX_LISTENING = re.compile(rb"WebDriver BiDi listening on (ws://[^\s]+)")


async def _wait(check: Any, what: str, process: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"{what} exited with {process.returncode} while starting")
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise BrowserError(f"{what} did not open its remote protocol within {START_TIMEOUT_S}s")


async def start(profile: Profile) -> Browser:
    directory = Path(tempfile.mkdtemp(prefix=f"{profile}-"))
    command = (
        _firefox_command(directory)
        if profile == "firefox"
        else _chromium_command(profile, directory)
    )
    log = directory.parent / f"{directory.name}.log"
    with log.open("wb") as sink:
        # Popen returns at once; the process outlives this call (asyncio's would tie it to
        # this loop's child watcher).
        process = subprocess.Popen(  # noqa: ASYNC220
            command, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL, start_new_session=True
        )
    browser: Browser = (Firefox if profile == "firefox" else Chromium)(profile, process, directory)
    try:
        if isinstance(browser, Firefox):

            async def listening() -> bytes | None:
                match = _FIREFOX_LISTENING.search(log.read_bytes())
                return match.group(1) if match else None

            base = (await _wait(listening, "firefox-esr", process)).decode()
            await browser._connect(base + "/session")
            await browser.command(
                "session.new", capabilities={"alwaysMatch": {"acceptInsecureCerts": True}}
            )
            tree = await browser.command("browsingContext.getTree")
            browser.context = tree["contexts"][0]["context"]
            await browser.command("session.subscribe", events=["log.entryAdded"])
        else:
            port_file = directory / "DevToolsActivePort"

            async def port() -> str | None:
                text = port_file.read_text() if port_file.exists() else ""
                return text.split()[0] if text.strip() else None

            base = f"http://127.0.0.1:{await _wait(port, 'chromium', process)}"
            async with browser._http.get(base + "/json") as r:
                targets = await r.json()
            page = next(t for t in targets if t["type"] == "page")
            await browser._connect(page["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log"):
                await browser.command(f"{domain}.enable")
    except BaseException as e:
        output = log.read_bytes()[-2000:].decode(errors="replace") if log.exists() else ""
        await browser.close()
        if isinstance(e, Exception) and not isinstance(e, BrowserError):
            raise BrowserError(f"{profile} did not start: {e!r}; its output: {output}") from e
        raise
    finally:
        with contextlib.suppress(OSError):
            log.unlink()
    return browser


@contextlib.asynccontextmanager
async def running(profile: Profile) -> AsyncIterator[Browser]:
    browser = await start(profile)
    try:
        yield browser
    finally:
        await browser.close()
