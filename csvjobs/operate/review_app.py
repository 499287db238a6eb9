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
import html
import json
import mimetypes
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import uvicorn
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, InputError
from csvjobs.images.channels import describe_checks
from csvjobs.models import BatchProgress, ImageStyle
from csvjobs.models import Route as ImageRoute
from csvjobs.operate import queries
from csvjobs.operate.result_shapes import image_for, image_location, prompt_for, review_state, tags_of
from csvjobs.storage.keys import IMAGES_BUCKET
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

TOKEN_HEADER = "x-review-token"
HEADER_SECONDS = 10.0  # a connection must finish a request's headers within this
MAX_STREAMS = 16  # event streams open at once (each is a browser tab); more get 503
MAX_CONNECTIONS = 64
FILTERS = ("all", "to_review", "approved", "rejected", "failed", "regenerating")
STYLE_LABEL = {ImageStyle.LIFESTYLE_EMOTIONAL: "lifestyle", ImageStyle.SINGLE_WHITE_BACKGROUND: "white"}


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

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "") not in self.hosts:
            return Response("wrong host", status_code=403)
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


# --- data ---------------------------------------------------------------------------------------------------


ROUTE_LABEL = {ImageRoute.CUTOUT.value: "cut out of the product's photo",
               ImageRoute.GENERATED_FROM_PHOTO.value: "generated from the product's photo",
               ImageRoute.GENERATED_FROM_TEXT.value: "generated from text (no photo)"}


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    images = []
    for style in ImageStyle:
        image = image_for(row["generated_images"], style)
        path = image_location(image)
        fidelity = image.get("fidelity") if isinstance(image.get("fidelity"), dict) else None
        images.append({"style": style.value, "label": STYLE_LABEL[style], "path": path,
                       "prompt": prompt_for(row["generated_prompts"], style),
                       "review": review_state(row["review"], style),
                       "route": ROUTE_LABEL.get(str(image.get("route") or ""), ""),
                       "checks": describe_checks(image.get("checks") or {}),
                       "flagged": bool(image.get("flagged")),
                       "fidelity": f"{float(fidelity.get('score', 0)):.2f}" if fidelity else ""})
    return {"row": row["row_number"], "title": row["title"] or f"row {row['row_number']}", "status": row["status"],
            "error": row["error_message"] or "", "cost": float(row["cost_usd"] or 0), "images": images,
            "tags": tags_of(row["generated_tags"]), "reference": row["reference_photo"] or "",
            "regenerating": bool(row["regenerating"]), "versions": int(row["versions"] or 0),
            "without_photo": bool(row["without_photo"]) and row["status"] == "completed",
            "photo_problem": row["photo_problem"] or ""}


def _matches(view: dict[str, Any], which: str) -> bool:
    states = {image["review"] for image in view["images"] if image["path"]}
    if which == "to_review":
        return view["status"] == "completed" and "unreviewed" in states
    if which in ("approved", "rejected"):
        return which in states
    if which == "failed":
        return view["status"] == "failed"
    if which == "regenerating":
        return view["regenerating"]
    return True


def build_app(server: ReviewServer) -> Starlette:
    """The review app for one batch."""
    storage = open_storage(server.settings)
    image_prefix = f"{IMAGES_BUCKET}/{server.user_id}/{server.batch_id}/"

    def rows(which: str = "all") -> tuple[list[dict[str, Any]], BatchProgress]:
        with db.connect(server.target, application_name="csvjobs-review") as conn:
            views = [_row_view(r) for r in queries.review_rows(conn, server.user_id, server.batch_id)]
            progress = queries.batch_progress(conn, server.user_id, server.batch_id)
        return [v for v in views if _matches(v, which)], progress

    def page(request: Request) -> HTMLResponse:
        # The shell holds no data: the page fetches its rows with the session secret. A fresh launch code puts the
        # secret into this one response (the page moves it to sessionStorage and drops the code from the URL);
        # a used or wrong code gets the shell without it, which says to run `csvjobs review` again.
        code = request.query_params.get("code", "")
        secret = server.token if code and server.redeem(code) else ""
        status = 403 if code and not secret else 200
        return HTMLResponse(render_shell(server, secret), status_code=status)

    def api_page(request: Request) -> HTMLResponse:
        which = request.query_params.get("filter", "all")
        if which not in FILTERS:
            which = "all"
        found, progress = rows(which)
        return HTMLResponse(render_rows(server, found, which, progress))

    def api_rows(request: Request) -> JSONResponse:
        which = request.query_params.get("filter", "all")
        return JSONResponse(rows(which if which in FILTERS else "all")[0])

    async def change(request: Request) -> JSONResponse:
        try:
            body = ChangeRequest.model_validate_json(await request.body()).checked()
        except (ValidationError, ValueError):
            return JSONResponse({"error": "send JSON: {rows: [row numbers], style, action, note}"}, status_code=400)
        numbers, style, action = body.rows, body.style, body.action

        def apply() -> int:
            with db.connect(server.target, application_name="csvjobs-review") as conn:
                if action == "regenerate":
                    return queries.request_regeneration(conn, server.user_id, server.batch_id, numbers, style,
                                                        body.note or None)
                if action not in ("approve", "reject", "clear"):
                    raise InputError(f"unknown action {action!r}")
                return queries.review_images(conn, server.user_id, server.batch_id, numbers, style, action)

        try:
            count = await asyncio.to_thread(apply)
        except CsvJobsError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"changed": count})

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
              Route("/api/change", change, methods=["POST"]), Route("/image", image), Route("/events", events)]
    return Starlette(routes=routes, middleware=[Middleware(Guard, server=server)])


def serve(server: ReviewServer) -> None:
    """Run the page until Ctrl-C."""
    # An open page keeps its event stream open: without a limit, Ctrl-C would wait for the browser to go away.
    config = uvicorn.Config(build_app(server), host="127.0.0.1", port=server.port, log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                            http=HeaderDeadlineProtocol, limit_concurrency=MAX_CONNECTIONS)
    uvicorn.Server(config).run()


# --- the page -----------------------------------------------------------------------------------------------


def render_shell(server: ReviewServer, secret: str) -> str:
    """The page without its rows (they are fetched with the session secret); the secret and the event stream's
    grant only in the one response that redeems the launch code."""
    esc = html.escape
    tabs = " ".join(f'<a class="tab" data-filter="{f}" href="#{f}">{f.replace("_", " ")}</a>' for f in FILTERS)
    return (_PAGE.replace("{{title}}", esc(f"Review {server.batch_id}")).replace("{{tabs}}", tabs)
            .replace("{{secret}}", esc(secret)).replace("{{events}}", esc(server.sign("events") if secret else "")))





def render_rows(server: ReviewServer, rows: list[dict[str, Any]], which: str, progress: BatchProgress) -> str:
    """The rows of one filter, as the page shows them (image URLs carry their read grants), under the batch's spend
    against its estimate and budget."""
    cards = "\n".join(_render_row(server, row) for row in rows) or '<p class="empty">no rows here</p>'
    without = sum(1 for row in rows if row["without_photo"])
    summary = (f'<p id="without-photo" class="warn">{without} row(s) here had their images made without the '
               "product's photo: check that the product in them is right</p>" if without else "")
    spend = f"spent ${float(progress.cost_usd):.4f}"
    if progress.estimated_cost_usd is not None:
        spend += f" of an estimated ${float(progress.estimated_cost_usd):.2f}"
    if progress.max_cost_usd is not None:
        spend += f"; budget ${float(progress.max_cost_usd):.2f}"
    if progress.pause_reason and progress.status.value == "paused":
        spend += f"; paused: {progress.pause_reason}"
    return (f'<div data-filter="{html.escape(which)}"><p id="spend">{html.escape(spend)}</p>{summary}{cards}'
            "</div>")


def _image_src(server: ReviewServer, path: str) -> str:
    return f"/image?path={quote(path)}&sig={server.sign(path)}"


def _render_row(server: ReviewServer, row: dict[str, Any]) -> str:
    esc = html.escape
    redoing = " · redoing" if row["regenerating"] else ""
    versions = f" · {row['versions']} earlier version(s)" if row["versions"] else ""
    parts = [f'<section class="row" data-row="{row["row"]}" data-status="{esc(row["status"])}">',
             f'<h2>{esc(row["title"])} <small>row {row["row"]} · {esc(row["status"])}{redoing}'
             f' · ${row["cost"]:.4f}{versions}</small></h2>']
    if row["error"]:
        parts.append(f'<p class="error">{esc(row["error"])}</p>')
    if row["without_photo"]:
        why = f" ({row['photo_problem']})" if row["photo_problem"] else ""
        parts.append(f'<p class="warn no-photo">made without the product\'s photo{esc(why)}</p>')
    parts.append('<div class="images">')
    if row["reference"]:
        src = esc(_image_src(server, row["reference"]))
        parts.append(f'<figure class="reference"><img src="{src}" alt="reference photo" data-large>'
                     "<figcaption>the product's photo</figcaption></figure>")
    for image in row["images"]:
        if not image["path"]:
            continue
        src = esc(_image_src(server, image["path"]))
        parts.append(
            f'<figure class="image {esc(image["review"])}" tabindex="0" data-style="{esc(image["style"])}">'
            f'<img src="{src}" alt="{esc(image["label"])}" data-large>'
            f'<figcaption><b>{esc(image["label"])}</b> <span class="state">{esc(image["review"])}</span>'
            f'<span class="route">{esc(image["route"])}</span>'
            + (f'<span class="flag warn">check the product: it may have changed (fidelity {esc(image["fidelity"])})'
               '</span>' if image["flagged"] else "")
            + (f'<span class="checks">{esc(image["checks"])}</span>' if image["checks"] else "")
            + f'<span class="prompt">{esc(image["prompt"])}</span>'
            '<span class="actions"><button data-action="approve">approve (a)</button>'
            '<button data-action="reject">reject (r)</button>'
            '<button data-action="regenerate">redo… (g)</button></span></figcaption></figure>')
    parts.append("</div>")
    if row["tags"]:
        parts.append('<p class="tags">' + " ".join(f"<span>{esc(t)}</span>" for t in row["tags"]) + "</p>")
    parts.append("</section>")
    return "".join(parts)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csvjobs-session" content="{{secret}}"><title>{{title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f4;color:#222}
.tab{margin-right:.6rem;color:#555}.tab.on{font-weight:bold;color:#000}
.row{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem;margin:1rem 0}
.images{display:flex;gap:1rem;flex-wrap:wrap}figure{margin:0;width:260px;border:3px solid transparent;padding:4px}
figure img{width:100%;cursor:zoom-in}figure.approved{border-color:#2a2}figure.rejected{border-color:#c33;opacity:.6}
figure:focus{outline:3px solid #36c}.state{margin-left:.4rem;font-size:.8rem;color:#666}
.prompt{display:block;font-size:.75rem;color:#666;max-height:4.5em;overflow:hidden}
.error{color:#c33}.warn{color:#a60}.route,.checks,.flag{display:block;font-size:.75rem}
.tags span{background:#eef;border-radius:4px;padding:0 .4rem;margin-right:.3rem;font-size:.8rem}
#large{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;justify-content:center}
#large img{max-width:92vw;max-height:92vh}#help{color:#666;font-size:.85rem}
</style></head><body data-events="{{events}}">
<h1>{{title}}</h1><nav>{{tabs}}</nav>
<p id="help">Keys: j / k next and previous image, a approve, r reject, g redo with a note, Enter large view,
Esc close. New and redone images appear here as the workers make them.</p>
<main id="rows"></main>
<div id="large"><img alt="large view"></div>
<script>
// The session secret arrives once, in the response to the printed URL; it lives in this origin's sessionStorage
// (never in a cookie, which the browser would send to every local port) and goes out as a header.
const given = document.querySelector('meta[name="csvjobs-session"]').content;
if (given) {
  sessionStorage.setItem('csvjobs-review', given);
  sessionStorage.setItem('csvjobs-review-events', document.body.dataset.events);
}
history.replaceState(null, '', location.pathname + location.hash);
const secret = sessionStorage.getItem('csvjobs-review');
const main = document.getElementById('rows');
const large = document.getElementById('large');
let filter = (location.hash || '#all').slice(1);
function api(path, options) {
  options = options || {};
  options.headers = Object.assign({'X-Review-Token': secret || ''}, options.headers || {});
  return fetch(path, options);
}
function figures() { return Array.from(document.querySelectorAll('figure.image')); }
async function act(fig, action) {
  const row = Number(fig.closest('.row').dataset.row);
  const body = {rows: [row], style: fig.dataset.style, action: action};
  if (action === 'regenerate') {
    const note = window.prompt('What should change in this image? (optional)', '');
    if (note === null) return;
    body.note = note;
  }
  const res = await api('/api/change', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                        body: JSON.stringify(body)});
  if (!res.ok) { alert((await res.json()).error || res.statusText); return; }
  await refresh(fig.closest('.row').dataset.row + ':' + fig.dataset.style);
}
async function refresh(focusKey) {
  const res = await api('/api/page?filter=' + encodeURIComponent(filter));
  if (!res.ok) { main.innerHTML = '<p class="error">the review server refused: ' + res.status + '</p>'; return; }
  const key = focusKey || (document.activeElement && document.activeElement.matches('figure.image') ?
    document.activeElement.closest('.row').dataset.row + ':' + document.activeElement.dataset.style : null);
  main.innerHTML = await res.text();
  document.querySelectorAll('.tab').forEach(t => t.classList.toggle('on', t.dataset.filter === filter));
  if (key) {
    const [row, style] = key.split(':');
    const fig = document.querySelector(`.row[data-row="${row}"] figure[data-style="${style}"]`);
    if (fig) fig.focus();
  }
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}
document.querySelector('nav').addEventListener('click', (e) => {
  const tab = e.target.closest('.tab');
  if (tab) { filter = tab.dataset.filter; refresh(null); }
});
main.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action]');
  if (button) { act(button.closest('figure'), button.dataset.action); return; }
  const img = e.target.closest('img[data-large]');
  if (img) { large.querySelector('img').src = img.src; large.style.display = 'flex'; }
});
large.addEventListener('click', () => { large.style.display = 'none'; });
document.addEventListener('keydown', (e) => {
  if (e.target.matches('input, textarea')) return;
  const all = figures();
  const current = document.activeElement && document.activeElement.matches('figure.image') ?
    all.indexOf(document.activeElement) : -1;
  if (e.key === 'Escape') { large.style.display = 'none'; return; }
  if (e.key === 'j' || e.key === 'ArrowRight') { (all[Math.min(current + 1, all.length - 1)] || all[0]).focus(); }
  else if (e.key === 'k' || e.key === 'ArrowLeft') { (all[Math.max(current - 1, 0)] || all[0]).focus(); }
  else if (current >= 0 && e.key === 'a') { act(all[current], 'approve'); }
  else if (current >= 0 && e.key === 'r') { act(all[current], 'reject'); }
  else if (current >= 0 && e.key === 'g') { act(all[current], 'regenerate'); }
  else if (current >= 0 && e.key === 'Enter') { all[current].querySelector('img').click(); }
});
if (!secret) {
  main.innerHTML = '<p class="error">This page opens from the URL <code>csvjobs review</code> printed, and each ' +
    'such URL works once: run <code>csvjobs review</code> again for a new one.</p>';
} else {
  refresh(null).then(() => {
    const events = new EventSource('/events?sig=' + sessionStorage.getItem('csvjobs-review-events'));
    events.addEventListener('ready', () => { document.body.dataset.live = 'yes'; });
    events.addEventListener('changed', () => { refresh(null); });
  });
}
</script>
</body></html>
"""
