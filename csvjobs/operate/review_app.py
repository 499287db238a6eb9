"""`csvjobs review`: a local page to look at a batch, approve or reject images and redo them with a note.

Starlette served by uvicorn (well-kept ASGI parts; no hand-written HTTP), bound to 127.0.0.1 only. The page is
rendered on the server, with a little JavaScript for keyboard shortcuts, the large view and live updates: an
EventSource on /events, which the server feeds from the database's notifications (LISTEN, no polling), after
which the page refetches the rows. Every request must carry the run's token (given once in the printed URL, then
kept in a SameSite=Strict, HttpOnly cookie) and a Host of this server; requests that change something must come
from this page (Origin checked), so neither another local process nor a web page in the browser can drive it.
Reads and changes run as the batch's owner, under row-level security.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import mimetypes
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, InputError
from csvjobs.models import ImageStyle
from csvjobs.operate import queries
from csvjobs.operate.result_shapes import image_for, image_location, prompt_for, review_state, tags_of
from csvjobs.storage.keys import IMAGES_BUCKET
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

COOKIE = "csvjobs_review"
FILTERS = ("all", "to_review", "approved", "rejected", "failed", "regenerating")
STYLE_LABEL = {ImageStyle.LIFESTYLE_EMOTIONAL: "lifestyle", ImageStyle.SINGLE_WHITE_BACKGROUND: "white"}


@dataclass
class ReviewServer:
    """One `csvjobs review` run: the batch, its owner, the token and where it listens."""

    settings: Settings
    batch_id: uuid.UUID
    user_id: uuid.UUID
    target: db.DatabaseTarget
    port: int
    token: str

    @property
    def url(self) -> str:
        """The URL to open (with the token, which the page swaps for a cookie)."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"


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
    """The run's token, this server's Host, and this page's Origin for changes."""

    def __init__(self, app: Any, server: ReviewServer) -> None:
        super().__init__(app)
        self.server = server
        self.hosts = {f"127.0.0.1:{server.port}", f"localhost:{server.port}"}

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.headers.get("host", "") not in self.hosts:
            return Response("wrong host", status_code=403)
        given = request.query_params.get("token") or request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            return Response("open the URL `csvjobs review` printed (it carries this run's token)", status_code=403)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is None or origin.removeprefix("http://") not in self.hosts:
                return Response("changes are accepted from the review page only", status_code=403)
        if request.query_params.get("token") and request.url.path == "/":
            # Swap the token in the URL for a cookie, so it does not stay in the address bar or history.
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, self.server.token, httponly=True, samesite="strict")
            return response
        return await call_next(request)


# --- data ---------------------------------------------------------------------------------------------------


def _row_view(row: dict[str, Any]) -> dict[str, Any]:
    images = []
    for style in ImageStyle:
        image = image_for(row["generated_images"], style)
        path = image_location(image)
        images.append({"style": style.value, "label": STYLE_LABEL[style], "path": path,
                       "prompt": prompt_for(row["generated_prompts"], style),
                       "review": review_state(row["review"], style)})
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

    def rows(which: str = "all") -> list[dict[str, Any]]:
        with db.connect(server.target, application_name="csvjobs-review") as conn:
            views = [_row_view(r) for r in queries.review_rows(conn, server.user_id, server.batch_id)]
        return [v for v in views if _matches(v, which)]

    def page(request: Request) -> HTMLResponse:
        which = request.query_params.get("filter", "all")
        if which not in FILTERS:
            which = "all"
        return HTMLResponse(render_page(server, rows(which), which))

    def api_rows(request: Request) -> JSONResponse:
        which = request.query_params.get("filter", "all")
        return JSONResponse(rows(which if which in FILTERS else "all"))

    async def change(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            numbers = [int(n) for n in body.get("rows", [])]
            style = body.get("style")
            action = str(body.get("action", ""))
        except (ValueError, TypeError, AttributeError, json.JSONDecodeError):
            return JSONResponse({"error": "send JSON: {rows: [n], style, action}"}, status_code=400)
        if not numbers or (style is not None and style not in {s.value for s in ImageStyle}):
            return JSONResponse({"error": "name the rows and a style"}, status_code=400)

        def apply() -> int:
            with db.connect(server.target, application_name="csvjobs-review") as conn:
                if action == "regenerate":
                    note = str(body.get("note") or "")[:1000] or None
                    return queries.request_regeneration(conn, server.user_id, server.batch_id, numbers, style, note)
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

    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            conn = await db.connect_async(server.target.url, application_name="csvjobs-review-listen")
            try:
                await db.listen_async(conn, queries.REVIEWS_CHANNEL)
                await db.listen_async(conn, queries.PROGRESS_CHANNEL)
                yield "event: ready\ndata: {}\n\n"
                wanted = str(server.batch_id)
                gen = conn.notifies(timeout=15.0)
                while True:
                    async for note in gen:
                        if note.payload in (wanted, ""):
                            yield f"event: changed\ndata: {json.dumps({'batch': wanted})}\n\n"
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    gen = conn.notifies(timeout=15.0)
            finally:
                await conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    routes = [Route("/", page), Route("/api/rows", api_rows), Route("/api/change", change, methods=["POST"]),
              Route("/image", image), Route("/events", events)]
    return Starlette(routes=routes, middleware=[Middleware(Guard, server=server)])


def serve(server: ReviewServer) -> None:
    """Run the page until Ctrl-C."""
    # An open page keeps its event stream open: without a limit, Ctrl-C would wait for the browser to go away.
    config = uvicorn.Config(build_app(server), host="127.0.0.1", port=server.port, log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run()


# --- the page -----------------------------------------------------------------------------------------------


def render_page(server: ReviewServer, rows: list[dict[str, Any]], which: str) -> str:
    """The whole page, server-rendered; the script only adds keys, the large view and live refresh."""
    esc = html.escape
    tabs = " ".join(f'<a class="tab{" on" if f == which else ""}" href="/?filter={f}">{f.replace("_", " ")}</a>'
                    for f in FILTERS)
    cards = "\n".join(_render_row(row) for row in rows) or '<p class="empty">no rows here</p>'
    without = sum(1 for row in rows if row["without_photo"])
    summary = (f'<p id="without-photo" class="warn">{without} row(s) here had their images made without the '
               "product's photo: check that the product in them is right</p>" if without else "")
    return _PAGE.replace("{{title}}", esc(f"Review {server.batch_id}")).replace("{{tabs}}", tabs).replace(
        "{{summary}}", summary).replace("{{cards}}", cards).replace("{{filter}}", esc(which))


def _render_row(row: dict[str, Any]) -> str:
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
        src = "/image?path=" + esc(row["reference"])
        parts.append(f'<figure class="reference"><img src="{src}" alt="reference photo" data-large>'
                     "<figcaption>the product's photo</figcaption></figure>")
    for image in row["images"]:
        if not image["path"]:
            continue
        src = "/image?path=" + esc(image["path"])
        parts.append(
            f'<figure class="image {esc(image["review"])}" tabindex="0" data-style="{esc(image["style"])}">'
            f'<img src="{src}" alt="{esc(image["label"])}" data-large>'
            f'<figcaption><b>{esc(image["label"])}</b> <span class="state">{esc(image["review"])}</span>'
            f'<span class="prompt">{esc(image["prompt"])}</span>'
            '<span class="actions"><button data-action="approve">approve (a)</button>'
            '<button data-action="reject">reject (r)</button>'
            '<button data-action="regenerate">redo… (g)</button></span></figcaption></figure>')
    parts.append("</div>")
    if row["tags"]:
        parts.append('<p class="tags">' + " ".join(f"<span>{esc(t)}</span>" for t in row["tags"]) + "</p>")
    parts.append("</section>")
    return "".join(parts)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f6f4;color:#222}
.tab{margin-right:.6rem;color:#555}.tab.on{font-weight:bold;color:#000}
.row{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem;margin:1rem 0}
.images{display:flex;gap:1rem;flex-wrap:wrap}figure{margin:0;width:260px;border:3px solid transparent;padding:4px}
figure img{width:100%;cursor:zoom-in}figure.approved{border-color:#2a2}figure.rejected{border-color:#c33;opacity:.6}
figure:focus{outline:3px solid #36c}.state{margin-left:.4rem;font-size:.8rem;color:#666}
.prompt{display:block;font-size:.75rem;color:#666;max-height:4.5em;overflow:hidden}
.error{color:#c33}.warn{color:#a60}
.tags span{background:#eef;border-radius:4px;padding:0 .4rem;margin-right:.3rem;font-size:.8rem}
#large{position:fixed;inset:0;background:rgba(0,0,0,.85);display:none;align-items:center;justify-content:center}
#large img{max-width:92vw;max-height:92vh}#help{color:#666;font-size:.85rem}
</style></head><body data-filter="{{filter}}">
<h1>{{title}}</h1><nav>{{tabs}}</nav>
<p id="help">Keys: j / k next and previous image, a approve, r reject, g redo with a note, Enter large view,
Esc close. New and redone images appear here as the workers make them.</p>
{{summary}}<main id="rows">{{cards}}</main>
<div id="large"><img alt="large view"></div>
<script>
const main = document.getElementById('rows');
const large = document.getElementById('large');
function figures() { return Array.from(document.querySelectorAll('figure.image')); }
async function act(fig, action) {
  const row = Number(fig.closest('.row').dataset.row);
  const body = {rows: [row], style: fig.dataset.style, action: action};
  if (action === 'regenerate') {
    const note = window.prompt('What should change in this image? (optional)', '');
    if (note === null) return;
    body.note = note;
  }
  const res = await fetch('/api/change', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                           body: JSON.stringify(body), credentials: 'same-origin'});
  if (!res.ok) { alert((await res.json()).error || res.statusText); return; }
  await refresh(fig.closest('.row').dataset.row + ':' + fig.dataset.style);
}
async function refresh(focusKey) {
  const res = await fetch('/?filter=' + document.body.dataset.filter, {credentials: 'same-origin'});
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  const key = focusKey || (document.activeElement && document.activeElement.matches('figure.image') ?
    document.activeElement.closest('.row').dataset.row + ':' + document.activeElement.dataset.style : null);
  main.innerHTML = doc.getElementById('rows').innerHTML;
  if (key) {
    const [row, style] = key.split(':');
    const fig = document.querySelector(`.row[data-row="${row}"] figure[data-style="${style}"]`);
    if (fig) fig.focus();
  }
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}
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
const events = new EventSource('/events');
events.addEventListener('ready', () => { document.body.dataset.live = 'yes'; });
events.addEventListener('changed', () => { refresh(null); });
</script>
</body></html>
"""
