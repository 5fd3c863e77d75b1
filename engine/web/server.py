"""The web page's server: HTTP for the page and `/status`, a WebSocket at `/ws`, one thread.

Why websockets' asyncio server and not aiohttp: websockets is already the generator
server's transport (one library for one job), and its `process_request` hook answers plain
HTTP GETs, which is all the page needs (three static files and a JSON status). Everything
runs on the `web` thread's event loop, never on the generation or audio threads: a
page's message goes the OSC route (`Dispatcher.handle`, which only queues), and changes
come back through a `Feed` (the scheduler only appends to a deque).

Security: beyond loopback a token (the URL's `?token=` once, then a cookie; the WebSocket
and `/status` need it too); on loopback without one, a loopback `Host` (no DNS rebinding);
always a same-origin check on the WebSocket's `Origin`; a message over 4 KiB closes its
connection (1009); a connection has `OPEN_TIMEOUT_S` to finish its request, and at most
`MAX_PAGES` pages are served; no file path from a page (patches load
by name from the set); every refused message counted in the dispatcher's `Rejects`.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import ipaddress
import json
import logging
import secrets
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.control.dispatcher import Dispatcher, OscInput
from engine.control.feedback import Feed
from engine.control import osc_space
from engine.control.rejects import Reject
from engine.errors import BacklineError
from engine.web import messages

log = logging.getLogger(__name__)
_ws_log = logging.getLogger(__name__ + ".ws")  # websockets' own lines: a page coming and going is ours to log
_ws_log.setLevel(logging.WARNING)

STATUS_EVERY_S = 0.1  # the page's live state, about 10 times a second
MAX_PAGES = 32  # connections at once; the next is closed with 1013 (try again later)
OPEN_TIMEOUT_S = 5.0  # a connection that has not finished its request by then is closed
COOKIE = "backline_token_{port}"  # browsers scope cookies by host, not port: one engine's never shadows another's
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"),
                    ("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:"))


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class WebServer:
    """Serves the page for `engine` (an Engine) through `dispatcher`; `learn` arms MIDI learn.

    `start()` binds (a BacklineError names the address if it cannot) and runs the `web`
    thread; `close()` stops it. `address` is the bound (host, port); `url` the page's URL,
    with its token."""

    def __init__(self, engine: Any, dispatcher: Dispatcher, *, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, learn: Callable[..., str | None] | None = None) -> None:
        if token is None and not loopback(host):
            token = secrets.token_urlsafe(12)  # beyond loopback a token is required: one for this run
        self.engine, self.dispatcher, self.rejects = engine, dispatcher, dispatcher.rejects
        self.host, self.port, self.token = host, port, token
        self._learn = learn
        self._files = {path: (resources.files("engine.web").joinpath("static", name).read_bytes(), kind)
                       for path, (name, kind) in STATIC.items()}
        self._pages: dict[ServerConnection, str] = {}  # connection -> its source name (web thread only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.address: tuple[str, int] = (host, port)
        self.received = 0  # WebSocket messages
        self.handled = 0  # of those, the ones that reached the control route
        self._feed = Feed("web-feedback", self._on_change)
        engine.add_listener(self._feed.put)

    @property
    def _cookie(self) -> str:
        return COOKIE.format(port=self.address[1])

    @property
    def url(self) -> str:
        """The page's URL with its token; on a wildcard address, the address a phone reaches."""
        host = self.address[0]
        if host in ("0.0.0.0", "::", ""):
            from engine.discovery import address_for

            host = address_for("0.0.0.0")
        host = host if ":" not in host else f"[{host}]"
        return f"http://{host}:{self.address[1]}/" + (f"?token={self.token}" if self.token else "")

    @property
    def pages(self) -> int:
        return len(self._pages)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise BacklineError(f"web page: cannot listen on {self.host}:{self.port}: "
                                f"{getattr(self._error, 'strerror', None) or self._error}")
        log.info("web page on %s", self.url)
        if self.token and sys.stderr.isatty():
            print_qr(self.url)

    def close(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: stopped.done() or stopped.set_result(None))
        if self._thread is not None:
            self._thread.join(5)
        self._feed.close()

    # -- the web thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported by start(), or logged once serving
            if not self._ready.is_set():
                self._error = err
                self._ready.set()
            else:
                log.exception("web page server stopped")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        async with serve(self._session, self.host, self.port, process_request=self._http, compression=None,
                         max_size=messages.MAX_MESSAGE, max_queue=64, close_timeout=1.0, open_timeout=OPEN_TIMEOUT_S,
                         logger=_ws_log) as server:
            self.address = server.sockets[0].getsockname()[:2]
            self._ready.set()
            ticker = asyncio.create_task(self._status_ticker())
            await self._stopped
            ticker.cancel()
            server.close()

    def _authorised(self, request: Request, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        given = query.get("token", [""])[0]
        if not given:
            try:
                cookie = SimpleCookie(request.headers.get("Cookie", ""))
            except CookieError:
                cookie = SimpleCookie()
            given = cookie[self._cookie].value if self._cookie in cookie else ""
        if not given:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else ""
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        """Every request, before any WebSocket handshake: the page, `/status`, or `/ws`'s checks."""
        path, _, query_text = request.path.partition("?")
        query = urllib.parse.parse_qs(query_text)
        peer = "%s:%s" % connection.remote_address[:2]
        host = request.headers.get("Host", "")
        if self.token is None and not loopback(urllib.parse.urlsplit(f"//{host}").hostname or ""):
            # no token on loopback, so the Host must be loopback too: a rebound DNS name is refused
            self.rejects.reject("forbidden", f"{path}: Host {host!r} on a loopback-only page", f"web:{peer}")
            return _response(403, b"this page answers on its loopback address only\n", "text/plain; charset=utf-8")
        if not self._authorised(request, query):
            self.rejects.reject("forbidden", f"{path}: no or wrong token", f"web:{peer}")
            return _response(401, b"This page needs its link with the token: backline prints it when it starts.\n",
                             "text/plain; charset=utf-8")
        if path == "/ws":
            origin = request.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != host.lower():
                self.rejects.reject("forbidden", f"WebSocket from origin {origin} (this page is {host})", f"web:{peer}")
                return _response(403, b"cross-origin WebSocket refused\n", "text/plain; charset=utf-8")
            return None
        if path == "/status":
            try:
                body = json.dumps(self.engine.status(), default=str).encode()
            except Exception as err:  # noqa: BLE001 - a monitor gets 500, the page server goes on
                log.exception("status for /status failed")
                return _response(500, json.dumps({"error": f"{type(err).__name__}: {err}"}).encode(), "application/json")
            return _response(200, body, "application/json")
        if path in self._files:
            body, kind = self._files[path]
            cookie = ()
            if self.token and "token" in query:  # the link with the token, opened once: a cookie from now on
                cookie = (("Set-Cookie", f"{self._cookie}={self.token}; Path=/; HttpOnly; SameSite=Lax"),)
            return _response(200, body, kind, cookie)
        return _response(404, f"no such page {path}; the page is /, the status /status\n".encode(),
                         "text/plain; charset=utf-8")

    async def _session(self, ws: ServerConnection) -> None:
        """One page's connection: hello, then its messages in order until it closes."""
        source = "web:%s:%s" % ws.remote_address[:2]
        if len(self._pages) >= MAX_PAGES:
            self.rejects.reject("too_many_clients", f"{MAX_PAGES} pages are connected", source)
            await ws.close(1013, f"{MAX_PAGES} pages are connected")
            return
        self._pages[ws] = source
        log.info("web page %s connected (%d open)", source, len(self._pages))
        try:
            try:
                hello = json.dumps({"hello": self._hello()}, default=str)
            except Exception as err:  # noqa: BLE001 - the page is told, and may reconnect
                log.exception("web page %s: no hello", source)
                hello = json.dumps({"error": f"the engine could not describe itself: {err}", "reason": "handler_error"})
            await ws.send(hello)
            async for text in ws:
                reply = self._on_message(ws, source, text)
                if reply is not None:
                    await ws.send(json.dumps(reply))
                await asyncio.sleep(0)  # a flood from one page never starves the others or the status
        except ConnectionClosed:
            pass
        finally:
            del self._pages[ws]
            log.info("web page %s gone (%d open)", source, len(self._pages))

    def _on_message(self, ws: ServerConnection, source: str, text: str | bytes) -> dict[str, object] | None:
        """One page message (web thread): to the control route, or refused with a reason."""
        self.received += 1
        try:
            message = messages.parse(text)
        except Reject as err:
            self.rejects.reject(err.reason, str(err), source)
            return {"error": str(err), "reason": err.reason}
        if isinstance(message, messages.LearnMessage):
            if self._learn is None:
                return {"learn": message.path, "state": "MIDI learn is off"}
            try:
                problem = self._learn(message.path, on_done=lambda result, error: self._learned(message.path, result, error))
            except Exception as err:  # noqa: BLE001 - learn failing must not end the page's connection
                log.exception("web page %s: learn %s failed", source, message.path)
                problem = f"failed: {err}"
            return {"learn": message.path, "state": problem or "armed"}
        refused = self.dispatcher.handle(OscInput(message.address, message.args), source)  # the OSC route
        if refused is not None:
            return {"error": refused[1], "reason": refused[0]}
        self.handled += 1
        return None

    def _learned(self, path: str, result: object, error: Exception | None) -> None:
        """MIDI learn finished (a MIDI input thread): tell the pages."""
        text = json.dumps({"learn": path, "state": f"failed: {error}" if error else "learned"})
        self._post(text, None)

    async def _status_ticker(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            if self._pages:
                try:
                    text = json.dumps({"status": self.engine.status()}, default=str)
                except Exception:  # noqa: BLE001 - the page misses one status, the next may come
                    log.exception("status for the web page failed")
                    continue
                broadcast(self._pages, text)

    def _hello(self) -> dict[str, object]:
        status = self.engine.status()
        return {"parameters": messages.parameter_table(), "values": self.engine.snapshot_state()["values"],
                "patches": [p.stem for p in self.engine.patch_set or ()], "patch": status["patch"],
                "status_fields": [name for name, _, _ in osc_space.STATUS_FIELDS], "status": status,
                "learn": self._learn is not None}

    # -- changes from the engine ("web-feedback", a Feed) --------------------------------------
    def _on_change(self, path: str, value: object, source: str) -> None:
        self._post(json.dumps({"path": path, "value": value, "source": source}, default=str), source)
        if path == "patch.load":  # a new patch may have other slots: the page rebuilds from every value
            self._post(json.dumps({"values": self.engine.snapshot_state()["values"]}, default=str), None)

    def _post(self, text: str, source: str | None) -> None:
        """Any thread: send `text` to every page but the one named `source`, on the web thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fan_out, text, source)
        except RuntimeError:  # closed meanwhile
            pass

    def _fan_out(self, text: str, source: str | None) -> None:
        broadcast([ws for ws, src in self._pages.items() if src != source], text)


def _response(status: int, body: bytes, kind: str, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body))), *SECURITY_HEADERS, *extra])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def print_qr(url: str) -> None:
    """The page's URL as a QR code on the terminal, for a phone's camera (stderr, a terminal only)."""
    try:
        import qrcode
    except ImportError:
        return
    qr = qrcode.QRCode(border=1)
    qr.add_data(url)
    qr.print_ascii(out=sys.stderr, invert=True)
