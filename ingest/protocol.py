"""How the edge treats HTTP connections: slow clients are cut off, protocol errors stay quiet.

aiohttp (3.14) has an idle keep-alive timeout but nothing that bounds how long a client may
take to send a request head: a client trickling header bytes (slowloris) or sending nothing
holds a socket and a task for as long as it likes. It also logs every malformed request
with a traceback, so anyone can flood the logs. :class:`EdgeRequestHandler` adds the head
timeout and logs protocol errors through :class:`ThrottledLog`; :class:`EdgeRunner` is an
``AppRunner`` whose connections use it (aiohttp has no option for the protocol class).

The runner also answers the pixel's paths straight from the connection (:func:`dispatch`):
aiohttp's ``Application._handle`` resolves the route and, first of all, calls
``asyncio.get_event_loop()``, which on Python 3.11 makes a ``getpid`` system call per
request (py-spy: 5.7% of a pinned worker's samples, the most costly line of the whole path
after the socket's read and write). Every other request goes through the application.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ingest.gif import GifResponse
from ingest.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

# Protocol noise is reported once a minute at most, with the count of what was not logged.
LOG_INTERVAL_S = 60.0
# A parser message echoes up to ~100 bytes of what the client sent; one readable line is enough.
_DETAIL_CHARS = 200


# The request lines the pixel answers; a malformed one still gets the image.
_PIXEL_LINES = (b"GET /sales.php", b"GET /sales?", b"GET /sales ", b"HEAD /sales")
# How much of a request's first bytes is kept to recognise a refused pixel call.
_HEAD_KEEP = 512


def pixel_request_line(head: bytes) -> bytes | None:
    """The request line if ``head`` (a request's first bytes) is a call of the sale pixel."""
    if not head.startswith(_PIXEL_LINES):
        return None
    return head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]


class ProtocolEvents:
    """What the edge's connections report, shared by all of them: counters and throttled logs."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval_s: float = LOG_INTERVAL_S,
        on_malformed_pixel: Callable[[bytes], None] = lambda _: None,
    ) -> None:
        # A pixel call the parser refused: published as a rejected call by the app.
        self.on_malformed_pixel = on_malformed_pixel
        events = Counter(
            "tracker_edge_protocol_events",
            "Connections closed for a slow request head, and malformed requests answered 400",
            ["event"], registry=registry,
        )  # fmt: skip
        self.head_timeouts = events.labels("head_timeout")
        self.malformed = events.labels("malformed_request")
        self.slow_log = ThrottledLog(
            logger, logging.INFO, "connections closed for a slow or missing request head",
            interval_s,
        )  # fmt: skip
        self.malformed_log = ThrottledLog(
            logger, logging.WARNING, "malformed HTTP requests answered 400", interval_s
        )
        # A bug in a handler shows its traceback, but once per interval, not once per request.
        self.error_log = ThrottledLog(
            logger, logging.ERROR, "unexpected errors handling requests", interval_s
        )

    def flush(self) -> None:
        for log in (self.slow_log, self.malformed_log, self.error_log):
            log.flush()


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1 protocol, plus a deadline for each request head.

    The deadline starts when the connection opens and, on a kept-alive connection, when the
    first byte of the next request arrives (until then the idle keep-alive timeout applies);
    it ends when the parser has the whole head. A connection still inside a head at the
    deadline is closed.

    One timer per connection, not one per request: a request only notes when its head began
    (arming and cancelling a timer per request showed in profiles). When the timer fires it
    closes the connection if a head is overdue, and otherwise sleeps until the earliest
    moment one could be.
    """

    __slots__ = ("_events", "_head", "_head_since", "_head_timeout_s", "_head_timer")

    def __init__(
        self,
        manager: web.Server,
        *,
        head_timeout_s: float,
        events: ProtocolEvents,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._events = events
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None  # when the head being read began
        self._head = b""  # the first bytes of the request being read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_since = self._loop.time()
        self._head_timer = self._loop.call_later(self._head_timeout_s, self._check_head)

    def data_received(self, data: bytes) -> None:
        # Only while the connection waits for a request: bytes that arrive during one are its
        # body (or a pipelined request, which the keep-alive timeout bounds after the answer).
        if data and self._head_since is None and self._waiting_for_request():
            self._head_since = self._loop.time()
            self._head = b""
        if len(self._head) < _HEAD_KEEP:
            self._head += data[: _HEAD_KEEP - len(self._head)]
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a head is complete (or refused as malformed)
            self._head_since = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # our bug, not the client's: aiohttp logs it through log_exception
            return super().handle_error(request, status, exc, message)
        # The client's malformed request (the parser refused it): aiohttp's own answer, a 400
        # that closes the connection, without its per-request traceback. No client address
        # in the line: the edge keeps addresses only as keyed hashes.
        self._events.malformed.inc()
        # ASCII only: the detail may quote request bytes a JSON log line could not encode.
        detail = " ".join(str(message or exc or "").split())[:_DETAIL_CHARS]
        detail = detail.encode("ascii", "backslashreplace").decode("ascii")
        self._events.malformed_log.log("malformed HTTP request answered %d: %s", status, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("part of a response was sent already, cannot answer the error")
        line = pixel_request_line(self._head)
        if line is not None:
            # Silent mode holds here too: the merchant's page gets its image, and the call
            # is recorded as rejected instead of vanishing in a 400.
            self._events.on_malformed_pixel(line)
            gif = GifResponse()
            gif.force_close()
            return gif
        response = web.Response(status=status, text=message, content_type="text/plain")
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        msg, *rest = args
        self._events.error_log.log(str(msg), *rest, exc_info=kw.get("exc_info", True))

    def _waiting_for_request(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _check_head(self) -> None:
        since = self._head_since
        now = self._loop.time()
        if since is None or not self._waiting_for_request():
            # No head being read (idle, or answering): none can be overdue for a while.
            self._head_timer = self._loop.call_at(now + self._head_timeout_s, self._check_head)
            return
        deadline = since + self._head_timeout_s
        if now < deadline:
            self._head_timer = self._loop.call_at(deadline, self._check_head)
            return
        self._head_timer = None
        self._events.head_timeouts.inc()
        self._events.slow_log.log(
            "closed a connection that sent no complete request head within %.0f s",
            self._head_timeout_s,
        )
        self.force_close()


# A request handler answering at once, without awaiting: the pixel's.
Direct = Callable[[web.BaseRequest], web.StreamResponse]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_DIRECT_METHODS = frozenset(("GET", "HEAD"))


def dispatch(app_handler: Handler, direct: Mapping[str, Direct]) -> Handler:
    """A request handler: GET and HEAD of the paths in ``direct`` (the path as sent, without
    its query) go to their handler, everything else to the application's.

    Only exact paths: a path the router would match in another spelling (percent-encoded)
    still reaches the same handler through the router.
    """

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method in _DIRECT_METHODS:
            answer = direct.get(request.raw_path.partition("?")[0])
            if answer is not None:
                return answer(request)
        return await app_handler(request)

    return handle


class EdgeServer(web.Server):
    """aiohttp's low-level server, making :class:`EdgeRequestHandler` connections."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        head_timeout_s: float,
        events: ProtocolEvents,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.head_timeout_s = head_timeout_s
        self.events = events

    def __call__(self) -> web.RequestHandler:
        return EdgeRequestHandler(
            self,
            loop=self._loop,
            head_timeout_s=self.head_timeout_s,
            events=self.events,
            **self._kwargs,
        )


class EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose server is an :class:`EdgeServer` and answers ``direct``'s paths
    past the router (:func:`dispatch`); the other options are aiohttp's."""

    __slots__ = ("_direct", "_events", "_head_timeout_s")

    def __init__(
        self,
        app: web.Application,
        *,
        head_timeout_s: float,
        events: ProtocolEvents,
        direct: Mapping[str, Direct],
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._events = events
        self._direct = dict(direct)

    async def _make_server(self) -> web.Server:
        # The application builds a plain Server (starting the app on the way); rebuild it
        # around the same request handler, request factory and protocol options.
        server = await super()._make_server()
        return EdgeServer(
            dispatch(server.request_handler, self._direct),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            head_timeout_s=self._head_timeout_s,
            events=self._events,
            **server._kwargs,
        )

    async def cleanup(self) -> None:
        await super().cleanup()
        self._events.flush()  # the counts not reported yet, before the process exits
