"""The console's web server: one page, its vendored assets, and a small JSON/SSE API over the
operator API of one or both gateways.

    GET  /                          the page (self-contained: no CDN, no network)
    GET  /static/...                Leaflet, the coastline, the ADIZ lines, the page's script
    GET  /api/config                parties, acknowledgement levels, the console's epoch and clock
    GET  /api/events                server-sent events: `entry` (one event of a floor, with its
                                    map change; `id` is `<epoch>-<seq>`), `links` (link status
                                    of every floor), `reset` (start over: the page's position is
                                    from another console or no longer kept). Resumes after
                                    `Last-Event-ID` (or `?after=<epoch>-<seq>`).
    GET  /api/messages/{id}         the message as each connected gateway's journal holds it
    POST /api/acknowledge           {"party", "message_id", "level", "text"}: acknowledge as that
                                    party's operator (the gateway decides whether it may)

Access. The console binds to loopback by default, and then only answers requests whose `Host`
is a loopback name (a web page elsewhere cannot reach it through DNS rebinding). Bound to any
other address it requires TLS (`ssl_context`) and a bearer token: the page is opened once with
`?token=...`, which sets an HttpOnly, SameSite=Strict cookie. A POST must be JSON and, when the
browser says where it comes from (`Origin`), come from the console's own origin, so another
site cannot post a form to it. The gateways' certificates and keys stay in this process: the
browser only ever sees the JSON views.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from client.console.feed import Feed, Update
from client.console.views import ACK_LEVELS, record_detail
from client.errors import (
    ClientError,
    InvalidMessage,
    NotFound,
    PermissionDenied,
    RateLimited,
    Timeout,
    Unavailable,
    WrongState,
)
from client.operator import OperatorClient
from hotline.errors import ConfigError

__all__ = ["Console", "is_loopback"]

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "hotline_console"
MAX_BODY = 16 * 1024  # a POST larger than this is refused (an acknowledgement is small)
TEXT_MAX = 1024  # characters of remarks / reason typed into the page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _status_of(error: ClientError) -> int:
    for kind, status in (
        (InvalidMessage, 400),
        (PermissionDenied, 403),
        (NotFound, 404),
        (WrongState, 409),
        (RateLimited, 429),
        (Unavailable, 503),
        (Timeout, 504),
    ):
        if isinstance(error, kind):
            return status
    return 502


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Console:
    """The console for the gateways of `clients` (party -> that party's operator client).

    `await console.start()` binds and returns the page's URL; `await console.stop()` ends the
    page streams, the server and the feed (the clients are the caller's to close).
    """

    def __init__(
        self,
        clients: Mapping[str, OperatorClient],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        title: str = "Hotline console",
    ) -> None:
        if not is_loopback(host) and (ssl_context is None or not token):
            raise ConfigError(
                f"the console binds to {host}, which is not loopback: give it TLS "
                "(certificate and key) and an access token, or bind to 127.0.0.1"
            )
        self.feed = Feed(clients)
        self.host = host
        self.port = port
        self.token = token or None
        self.ssl_context = ssl_context
        self.title = title
        self._runner: web.AppRunner | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.followers = 0  # pages currently following the event stream
        self.followed = asyncio.Event()  # set once a page has followed the stream

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def note(self, text: str) -> None:
        """Show a line of narration on the page (between the floors)."""
        self.feed.note(text)

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self._index)
        app.router.add_get("/api/config", self._config)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/messages/{message_id}", self._message)
        app.router.add_post("/api/acknowledge", self._acknowledge)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def start(self) -> str:
        self._feed_task = asyncio.create_task(self.feed.run(), name="console-feed")
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(
                f"the console cannot listen on {self.host}:{self.port}: {exc}"
            ) from None
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
            self._feed_task = None

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()

    # ------------------------------------------------------------------ access

    def _allowed_host(self, request: web.Request) -> bool:
        if not is_loopback(self.host):
            return True  # TLS and the token protect it; names are the operator's business
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        return is_loopback(host)

    def _has_token(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        offered = request.cookies.get(COOKIE, "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered = auth.removeprefix("Bearer ")
        return hmac.compare_digest(offered.encode(), self.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._allowed_host(request):
            return _problem(421, "this console answers only to a loopback host name")
        if request.path == "/" and self.token is not None and "token" in request.query:
            if not hmac.compare_digest(request.query["token"].encode(), self.token.encode()):
                return _problem(401, "wrong token")
            moved = web.HTTPSeeOther("/")
            moved.set_cookie(
                COOKIE,
                self.token,
                httponly=True,
                samesite="Strict",
                secure=self.ssl_context is not None,
                path="/",
            )
            raise moved
        if request.path.startswith("/api/") and not self._has_token(request):
            return _problem(401, "open the console with its ?token= link first")
        if request.method == "POST":
            if request.content_type != "application/json":
                return _problem(415, "send JSON (Content-Type: application/json)")
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}":
                return _problem(403, f"requests from {origin} are not accepted")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    # ------------------------------------------------------------------ handlers

    async def _index(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(STATIC / "index.html")
        # Everything the page loads comes from here: no CDN, no tiles, no inline script.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; frame-ancestors 'none'"
        )
        return response

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "title": self.title,
                "parties": self.feed.parties,
                "levels": list(ACK_LEVELS),
                "epoch": self.feed.epoch,
                "server_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "links": self.feed.links(),
            }
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Last-Event-ID") or request.query.get("after")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self.followers += 1
        self.followed.set()
        try:
            await response.write(b"retry: 1000\n\n")
            async for update in self.feed.follow(token, stop=self._closing):
                await response.write(self._sse(update))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.followers -= 1
        return response

    def _sse(self, update: Update) -> bytes:
        parts: list[str] = []
        if update.reset:
            parts.append(f"event: reset\ndata: {json.dumps({'epoch': self.feed.epoch})}\n\n")
        if update.links is not None:
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            data = json.dumps({"server_time": now, "links": update.links}, ensure_ascii=False)
            parts.append(f"event: links\ndata: {data}\n\n")
        for entry in update.entries:
            data = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            parts.append(f"id: {self.feed.epoch}-{entry['seq']}\nevent: entry\ndata: {data}\n\n")
        if not parts:
            parts.append(": keepalive\n\n")
        return "".join(parts).encode()

    async def _message(self, request: web.Request) -> web.Response:
        message_id = request.match_info["message_id"]
        views: dict[str, Any] = {}
        for party, client in self.feed.clients.items():
            try:
                views[party] = {"record": record_detail(await client.get(message_id))}
            except NotFound:
                views[party] = {"record": None, "error": "not in this journal"}
            except ClientError as exc:
                views[party] = {"record": None, "error": str(exc)}
        return web.json_response({"message_id": message_id, "journals": views})

    async def _acknowledge(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _problem(400, "the request is not valid JSON")
        if not isinstance(body, dict):
            return _problem(400, "the request must be a JSON object")
        party, message_id = body.get("party"), body.get("message_id")
        level, text = body.get("level"), body.get("text") or ""
        client = self.feed.clients.get(party) if isinstance(party, str) else None
        if client is None:
            return _problem(400, f"party must be one of {', '.join(self.feed.parties)}")
        if not isinstance(message_id, str) or not message_id:
            return _problem(400, "message_id is required")
        if level not in ACK_LEVELS:
            return _problem(400, f"level must be one of {', '.join(ACK_LEVELS)}")
        if not isinstance(text, str) or len(text) > TEXT_MAX:
            return _problem(400, f"text must be a string of at most {TEXT_MAX} characters")
        # UNABLE carries its reason; every other level's words are remarks.
        words = text.strip() or None
        unable = level == "UNABLE"
        try:
            result = await client.acknowledge(
                message_id,
                ACK_LEVELS[level],
                reason=words if unable else None,
                remarks=None if unable else words,
            )
        except ClientError as exc:
            return _problem(_status_of(exc), exc.detail)
        return web.json_response(
            {
                "party": party,
                "ack_message_id": result.ack_message_id,
                "journal_position": result.journal_position,
            }
        )
