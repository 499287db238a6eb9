"""`csvjobs review`: a local page to look at a batch, approve or reject images and redo them with a note.

Starlette served by uvicorn (well-kept ASGI parts; no hand-written HTTP), bound to 127.0.0.1 only. The page is
rendered on the server, with a little JavaScript for keyboard shortcuts, the large view and live updates: an
EventSource on /events, which the server feeds from the database's notifications (one shared LISTEN connection,
no polling), after which the page refetches the rows.

Access. A browser sends every 127.0.0.1 cookie to every 127.0.0.1 port, so no credential rides in a cookie: the
printed URL carries a launch code that works once (it reaches the browser launcher's arguments, which any local
user can read), and redeeming it hands the page this run's session secret, which the page keeps in its own
origin's sessionStorage and sends as a header (X-Review-Token) on every request. Images and the event stream,
which a browser loads without custom headers, are requested with an HMAC of the secret over exactly what they
read. Every request must name this server's Host; changes must also come from this page's Origin. Connections
that do not finish their headers within HEADER_SECONDS are closed (slow-header attacks).
Reads and changes run as the batch's owner, under row-level security.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import mimetypes
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import uvicorn
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from uvicorn.protocols.http.h11_impl import H11Protocol

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, InputError
from csvjobs.models import BatchProgress, ImageStyle
from csvjobs.operate import queries
from csvjobs.operate.review import redo_pricer
from csvjobs.operate.review_view import (
    FILTERS,
    PAGE_SIZE,
    matches,
    page_context,
    product_groups,
    row_view,
)
from csvjobs.storage.keys import IMAGES_BUCKET
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
TOKEN_HEADER = "x-review-token"
HEADER_SECONDS = 10.0  # a connection must finish a request's headers within this
MAX_STREAMS = 16  # event streams open at once (each is a browser tab); more get 503
# Requests the page works on at once; more get 503. Counted per request, not per connection: a local process that
# holds connections open without finishing their headers never reaches the app, so it cannot lock the reviewer
# out (uvicorn's own limit counts every open connection: 64 half-open sockets made every request a 503). Such
# connections cost a socket and a small buffer each, and are closed after HEADER_SECONDS.
MAX_REQUESTS = 64


@dataclass
class ReviewServer:
    """One `csvjobs review` run: the batch, its owner, the session secret, the launch code and where it listens."""

    settings: Settings
    batch_id: uuid.UUID
    user_id: uuid.UUID
    target: db.DatabaseTarget
    port: int
    token: str
    launch_code: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    launched: bool = False
    # The spot-check's sample stays the same while this page is open: it is ordered by a hash with this seed.
    sample_seed: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def url(self) -> str:
        """The URL to open: its launch code works once (then the page holds the session secret)."""
        return f"http://127.0.0.1:{self.port}/?code={self.launch_code}"

    def redeem(self, code: str) -> bool:
        """Whether code is the launch code, not used before; using it spends it."""
        if self.launched or not hmac.compare_digest(code.encode(), self.launch_code.encode()):
            return False
        self.launched = True
        return True

    def sign(self, what: str) -> str:
        """The grant to read exactly `what` (an image path, or "events") without the header."""
        return hmac.new(self.token.encode(), what.encode(), hashlib.sha256).hexdigest()[:32]

    def signed(self, what: str, given: str) -> bool:
        """Whether `given` is this run's grant for `what`."""
        return hmac.compare_digest(self.sign(what).encode(), given.encode())


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(settings: Settings, batch_id: uuid.UUID, port: int | None) -> ReviewServer:
    """Check that the batch is the user's (exit 2 otherwise) and choose the port and token."""
    user_id = resolve_user_id(settings)
    target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        queries.review_rows(conn, user_id, batch_id)  # "no such batch" for another user's
    if port is not None:
        if not 0 < port < 65536:
            raise InputError(f"--port {port}: choose a port between 1 and 65535")
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                raise InputError(f"--port {port}: cannot listen there ({exc.strerror}); choose another port or "
                                 "leave --port out for a free one") from exc
    return ReviewServer(settings, batch_id, user_id, target, port or free_port(), secrets.token_urlsafe(24))


# --- access -------------------------------------------------------------------------------------------------


class Guard(BaseHTTPMiddleware):
    """This server's Host on every request; the session secret (header), or a grant for exactly what an image or
    event-stream request reads; this page's Origin for changes. "/" is the page's shell and holds no data."""

    def __init__(self, app: Any, server: ReviewServer) -> None:
        super().__init__(app)
        self.server = server
        self.hosts = {f"127.0.0.1:{server.port}", f"localhost:{server.port}"}
        self.busy = 0  # requests in progress (one event loop: no lock needed)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "") not in self.hosts:
            return Response("wrong host", status_code=403)
        if self.busy >= MAX_REQUESTS:
            return Response("the review page is busy; try again in a moment", status_code=503)
        self.busy += 1
        try:
            return await self._dispatch(request, call_next)
        finally:
            self.busy -= 1

    async def _dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path == "/":
            response = await call_next(request)
        else:
            if not self._allowed(request, path):
                return Response("open the URL `csvjobs review` printed (each URL works once)", status_code=403)
            if request.method not in ("GET", "HEAD"):
                origin = request.headers.get("origin")
                if origin is None or origin.removeprefix("http://") not in self.hosts:
                    return Response("changes are accepted from the review page only", status_code=403)
            response = await call_next(request)
        # No URL of this page (image grants included) leaves it in a Referer; no other site may frame it.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _allowed(self, request: Request, path: str) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        if given and hmac.compare_digest(given.encode(), self.server.token.encode()):
            return True
        grant = request.query_params.get("sig", "")
        if request.method == "GET" and grant:
            if path == "/image":
                return self.server.signed(request.query_params.get("path", ""), grant)
            if path == "/events":
                return self.server.signed("events", grant)
        return False


class ChangeRequest(BaseModel):
    """A review page's change: which rows, which style (or both), what to do, and a note for a redo."""

    rows: list[int] = Field(min_length=1, max_length=10_000)
    style: str | None = None
    action: str
    note: str | None = Field(default=None, max_length=1000)

    def checked(self) -> ChangeRequest:
        """Itself, once every row number and the style are in range (else ValueError)."""
        if any(not 0 < n < 2**31 for n in self.rows):
            raise ValueError("row numbers are whole numbers from 1")
        if self.style is not None and self.style not in {s.value for s in ImageStyle}:
            raise ValueError("unknown style")
        return self


class AltTextRequest(BaseModel):
    """A review page's edit of an image's alt text (an empty text goes back to the model's)."""

    rows: list[int] = Field(min_length=1, max_length=10_000)
    style: str
    text: str = Field(max_length=500)

    def checked(self) -> AltTextRequest:
        """Itself, once the row numbers and the style are in range (else ValueError)."""
        ChangeRequest(rows=self.rows, style=self.style, action="alt").checked()
        return self


class RestoreRequest(BaseModel):
    """A review page's request to bring back an earlier version of an image."""

    row: int = Field(gt=0, lt=2**31)
    style: str
    version: int = Field(gt=0, lt=2**31)

    def checked(self) -> RestoreRequest:
        """Itself, once the style is known (else ValueError)."""
        ChangeRequest(rows=[self.row], style=self.style, action="restore").checked()
        return self


class UnflaggedRequest(BaseModel):
    """The page's "approve every image that needs no eyes" (after a spot-check of the sample)."""

    approve: bool

    def checked(self) -> UnflaggedRequest:
        """Itself, once it says to approve (else ValueError)."""
        if not self.approve:
            raise ValueError("nothing to do")
        return self


_Body = TypeVar("_Body", ChangeRequest, AltTextRequest, RestoreRequest, UnflaggedRequest)
SAMPLE_MAX = 500


class Notifier:
    """One LISTEN connection shared by every event stream (each stream used to hold a connection of its own):
    it fans the batch's notifications out to the open streams' queues, and reconnects if the database goes."""

    def __init__(self, server: ReviewServer) -> None:
        self.server = server
        self.queues: set[asyncio.Queue[str]] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[str] | None:
        """A queue of notifications for one stream, or None when MAX_STREAMS are open."""
        if len(self.queues) >= MAX_STREAMS:
            return None
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._listen())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        """Forget a stream's queue (the listening connection stays for the next stream)."""
        self.queues.discard(queue)

    async def _listen(self) -> None:
        wanted = str(self.server.batch_id)
        while True:
            try:
                conn = await db.connect_async(self.server.target.url, application_name="csvjobs-review-listen")
                try:
                    await db.listen_async(conn, queries.REVIEWS_CHANNEL)
                    await db.listen_async(conn, queries.PROGRESS_CHANNEL)
                    self.ready.set()
                    async for note in conn.notifies():
                        if note.payload in (wanted, ""):
                            for queue in list(self.queues):
                                if not queue.full():  # a full queue already has a change to report
                                    queue.put_nowait(wanted)
                finally:
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away: streams stay open, and listening resumes
                self.ready.clear()
                await asyncio.sleep(2)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are not complete within
    HEADER_SECONDS (uvicorn times out idle keep-alive connections, but not a request that never finishes)."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _watch_headers(self) -> None:
        if self._waiting_for_request():
            if self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(HEADER_SECONDS, self._too_slow)
        elif self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._waiting_for_request() and not self.transport.is_closing():
            self.transport.close()


def build_app(server: ReviewServer) -> Starlette:
    """The review app for one batch."""
    storage = open_storage(server.settings)
    image_prefix = f"{IMAGES_BUCKET}/{server.user_id}/{server.batch_id}/"

    def rows(which: str = "all") -> tuple[list[dict[str, Any]], BatchProgress]:
        with db.connect(server.target, application_name="csvjobs-review") as conn:
            views = [row_view(r) for r in queries.review_rows(conn, server.user_id, server.batch_id)]
            progress = queries.batch_progress(conn, server.user_id, server.batch_id)
        return [v for v in views if matches(v, which)], progress

    def page(request: Request) -> HTMLResponse:
        # The shell holds no data: the page fetches its rows with the session secret. A fresh launch code puts the
        # secret into this one response (the page moves it to sessionStorage and drops the code from the URL);
        # a used or wrong code gets the shell without it, which says to run `csvjobs review` again.
        # Nothing of the batch, and no database work, before the code is checked: the heading (the file's name,
        # the row count, the channels) comes with the rows, through the guarded API.
        code = request.query_params.get("code", "")
        secret = server.token if code and server.redeem(code) else ""
        context = {"title": "Review", "secret": secret, "filters": FILTERS, "subtitle": "",
                   "events": server.sign("events") if secret else ""}
        return TEMPLATES.TemplateResponse(request, "review_page.html", context,
                                          status_code=403 if code and not secret else 200)

    def api_page(request: Request) -> Response:
        # One page of products (keyset: after or before a row number) and the batch's counts, read in the
        # database: a refresh costs the same on a 10,000-row batch as on a 10-row one.
        which = request.query_params.get("filter", "all")
        if which not in FILTERS and which != queries.SAMPLE:
            which = "all"
        number, after, before, wanted = (_whole(request.query_params.get(name))
                                         for name in ("page", "after", "before", "sample"))
        sample_size = min(max(1, wanted or 20), SAMPLE_MAX) if which == queries.SAMPLE else 0
        with db.connect(server.target, application_name="csvjobs-review") as conn:
            found = queries.review_page(conn, server.user_id, server.batch_id, which, after=after, before=before,
                                        size=PAGE_SIZE, sample=(server.sample_seed, sample_size))
            progress = queries.batch_progress(conn, server.user_id, server.batch_id)
            groups = product_groups(found)
            versions = queries.image_versions(conn, server.user_id, server.batch_id, [g["row"] for g in groups])
            price = redo_pricer(conn, server.settings, server.user_id)
        context = page_context(lambda path: _image_src(server, path), groups, which, number or 1, found, progress,
                               lambda image: price([image]), versions, sample_size)
        channels = f" · for {', '.join(progress.channels)}" if progress.channels else ""
        context["heading"] = {"title": f"Review {progress.original_filename}",
                              "subtitle": f"batch {str(server.batch_id)[:8]} · {progress.total_rows} row(s){channels}"}
        return TEMPLATES.TemplateResponse(request, "review_rows.html", context)

    async def json_action(request: Request, model: type[_Body], usage: str, answer: str,
                          act: Callable[[_Body, db.Connection], Any]) -> JSONResponse:
        """A page's change: its JSON body checked (400 with usage when it is not), then act on its own connection
        off the event loop; a refusal (CsvJobsError) is a 400 with its message, else {answer: what act returned}."""
        try:
            body = model.model_validate_json(await request.body()).checked()
        except (ValidationError, ValueError):
            return JSONResponse({"error": f"send JSON: {usage}"}, status_code=400)

        def apply() -> Any:
            with db.connect(server.target, application_name="csvjobs-review") as conn:
                return act(body, conn)

        try:
            result = await asyncio.to_thread(apply)
        except CsvJobsError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({answer: result})

    async def restore(request: Request) -> JSONResponse:
        return await json_action(request, RestoreRequest, "{row, style, version}", "kept_as", lambda body, conn: (
            queries.restore_version(conn, server.user_id, server.batch_id, body.row, body.style, body.version)))

    async def alt_text(request: Request) -> JSONResponse:
        return await json_action(request, AltTextRequest, "{rows: [row numbers], style, text}", "changed",
                                 lambda body, conn: queries.set_alt_text(conn, server.user_id, server.batch_id,
                                                                         body.rows, body.style, body.text))

    async def approve_unflagged(request: Request) -> JSONResponse:
        return await json_action(request, UnflaggedRequest, "{approve: true}", "approved",
                                 lambda _body, conn: queries.approve_unflagged(conn, server.user_id, server.batch_id))

    def api_rows(request: Request) -> JSONResponse:
        which = request.query_params.get("filter", "all")
        return JSONResponse(rows(which if which in FILTERS else "all")[0])

    def decide_rows(body: ChangeRequest, conn: db.Connection) -> int:
        if body.action == "regenerate":
            return queries.request_regeneration(conn, server.user_id, server.batch_id, body.rows, body.style,
                                                body.note or None)
        if body.action not in ("approve", "reject", "clear"):
            raise InputError(f"unknown action {body.action!r}")
        return queries.review_images(conn, server.user_id, server.batch_id, body.rows, body.style, body.action)

    async def change(request: Request) -> JSONResponse:
        return await json_action(request, ChangeRequest, "{rows: [row numbers], style, action, note}", "changed",
                                 decide_rows)

    def image(request: Request) -> Response:
        path = request.query_params.get("path", "")
        if not path.startswith(image_prefix) or ".." in path:
            return Response("not an image of this batch", status_code=404)
        try:
            data = storage.read_bytes(path)
        except Exception:  # gone or unreadable: the page shows the caption only
            return Response("image not found", status_code=404)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})

    notifier = Notifier(server)

    async def events(request: Request) -> Response:
        queue = notifier.subscribe()
        if queue is None:
            return Response("too many open review pages", status_code=503)

        async def stream() -> AsyncIterator[str]:
            try:
                await asyncio.wait_for(notifier.ready.wait(), 15)
                yield "event: ready\ndata: {}\n\n"
                while not await request.is_disconnected():
                    try:
                        batch = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: changed\ndata: {json.dumps({'batch': batch})}\n\n"
            finally:
                notifier.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    routes = [Route("/", page), Route("/api/page", api_page), Route("/api/rows", api_rows),
              Route("/api/change", change, methods=["POST"]), Route("/api/alt", alt_text, methods=["POST"]),
              Route("/api/restore", restore, methods=["POST"]),
              Route("/api/approve-unflagged", approve_unflagged, methods=["POST"]),
              Route("/image", image), Route("/events", events)]
    return Starlette(routes=routes, middleware=[Middleware(Guard, server=server)])


def serve(server: ReviewServer) -> None:
    """Run the page until Ctrl-C."""
    # An open page keeps its event stream open: without a limit, Ctrl-C would wait for the browser to go away.
    config = uvicorn.Config(build_app(server), host="127.0.0.1", port=server.port, log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                            http=HeaderDeadlineProtocol)
    uvicorn.Server(config).run()


def _whole(value: str | None) -> int | None:
    """A query parameter that should be a whole number (None when it is missing or is not one)."""
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _image_src(server: ReviewServer, path: str) -> str:
    return f"/image?path={quote(path)}&sig={server.sign(path)}"
