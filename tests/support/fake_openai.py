"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: chat completions with structured output and image
generations with base64 PNGs, and the Files and Batch APIs (upload, create, retrieve, list, cancel, output and
error file content) running a batch's lines through the same handlers after a delay. It counts calls and can be
told to answer 429 with Retry-After, 5xx, slowly, with malformed JSON, a refusal or a content-policy error, to fail
some batch lines, or to let a batch expire part way."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


def tiny_png(color: tuple[int, int, int] = (30, 140, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


def cutout_png(color: tuple[int, int, int] = (30, 140, 200), side: int = 32) -> bytes:
    """What an image model returns for background=transparent: the product on transparent pixels, with a
    slightly off-white halo around it, as real models leave."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    image.paste((250, 248, 245, 255), (side // 8, side // 8, 7 * side // 8, 7 * side // 8))
    image.paste((*color, 255), (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _reference_of(body: dict[str, Any]) -> bytes | None:
    """The photo an edit was sent: the multipart file, or a JSON body's first images[].image_url data URL."""
    files = body.get("_files") or {}
    if files.get("image"):
        return bytes(files["image"])
    images = body.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict):
        url = str(images[0].get("image_url") or "")
        if url.startswith("data:") and "," in url:
            return base64.b64decode(url.split(",", 1)[1])
    return None


def _edit(reference: bytes, transparent: bool, lose: bool) -> bytes:
    """What an edit returns: the reference pasted into a green scene (or, transparent, onto nothing); losing the
    product, the scene alone (or a blue block)."""
    if lose:
        return cutout_png() if transparent else tiny_png((60, 150, 70))
    photo = Image.open(io.BytesIO(reference)).convert("RGB")
    photo.thumbnail((44, 44))
    canvas = Image.new("RGBA", (64, 64), (0, 0, 0, 0) if transparent else (60, 150, 70, 255))
    canvas.paste(photo, ((64 - photo.width) // 2, (64 - photo.height) // 2))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _scene() -> bytes:
    """An opaque cluttered scene, nothing on white: what a model that ignored "transparent background" returns."""
    rng = random.Random(7)
    image = Image.new("RGB", (16, 16))
    image.putdata([(rng.randrange(255), rng.randrange(255), rng.randrange(255)) for _ in range(256)])
    out = io.BytesIO()
    image.resize((64, 64), Image.Resampling.NEAREST).save(out, format="PNG")
    return out.getvalue()


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Fields and files of a multipart/form-data body (the Images edit endpoint's)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = data
        else:
            fields[str(name)] = data.decode()
    return fields, files


class RandomSchedule:
    """A random failure schedule for FakeOpenAI.schedule: each call draws its fate from a seeded generator, failures
    answered at once and successes slowly (as real image calls, 10-60 s, are slow next to a 429)."""

    def __init__(self, seed: int, *, rate_limited: float = 0.30, server_error: float = 0.10, hang: float = 0.05,
                 hang_seconds: float = 1.6, slow: tuple[float, float] = (0.2, 0.9)) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.bounds = (rate_limited, rate_limited + server_error, rate_limited + server_error + hang)
        self.hang_seconds = hang_seconds
        self.slow = slow

    def __call__(self, endpoint: str, body: dict[str, Any]) -> tuple[str, float]:
        with self.lock:
            roll = self.rng.random()
            wait = self.rng.uniform(*self.slow)
        if roll < self.bounds[0]:
            return "429", 0.0
        if roll < self.bounds[1]:
            return "500", 0.0
        if roll < self.bounds[2]:
            return "hang", self.hang_seconds  # past the client's timeout: nothing is served
        return "ok", wait


@dataclass
class Call:
    at: float
    endpoint: str
    body: dict[str, Any]
    status: int = 200


@dataclass
class FakeOpenAI:
    """Behaviour switches are plain attributes; tests set them before or during a run."""

    latency: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503, 429)
    rate_limit_next_images: int = 0
    retry_after: str = "1"
    refuse_when: str | None = None
    malformed_chat_next: int = 0
    policy_when: str | None = None
    hang_first_image_when: str | None = None
    hang_seconds: float = 60.0
    image_as_url: bool = False
    # 401 to every request, quoting the key it was sent (as a careless compatible server might).
    reject_key: bool = False
    # Every Authorization header the server was sent.
    authorizations: set[str] = field(default_factory=set)
    # Models this server answers 404 model_not_found for (unknown or retired).
    unknown_models: set[str] = field(default_factory=set)
    # Batch API: a batch runs its lines this long after it is created; lines whose body contains
    # batch_fail_when fail (HTTP 500, in the error file), batch_fail_times times in all; with batch_expire_after,
    # the next batch runs only that many lines and expires.
    batch_delay: float = 0.3
    batch_fail_when: str | None = None
    batch_fail_times: int = 1_000_000
    batch_expire_after: int | None = None
    # Edits of a product photo: the first lose_product_edits of them (any endpoint) lose the product (a green
    # scene, or a blue block on transparency); the others paste the reference into the scene, as a faithful model
    # keeps the product.
    lose_product_edits: int = 0
    # White images: the next dirty_white_next requests for a transparent background come back as an opaque,
    # cluttered scene instead (a model that ignored the request): the product cannot be found on it.
    dirty_white_next: int = 0
    # Flex processing: the next flex_busy requests with service_tier "flex" answer 429 (no capacity).
    flex_busy: int = 0
    # Answer 400 to every batch creation (an input file OpenAI will not take).
    refuse_batches: bool = False
    # Send a file's content a line at a time, this long apart (a large output file read over a slow link).
    content_line_seconds: float = 0.0
    # A failure schedule: called with the endpoint ("chat", "image", "edit") and the request body of every
    # synchronous model call, it answers what the call does: ("ok", seconds) succeeds after that long, ("429", s)
    # and ("500", s) fail after s seconds (a 429 with Retry-After: retry_after), ("hang", s) answers nothing for s
    # seconds and then a 500 (a client that gave up never sees it; nothing was served).
    schedule: Callable[[str, dict[str, Any]], tuple[str, float]] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seed: int = 1

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._hung: set[str] = set()
        self.png = tiny_png()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, headers, payload = fake.answer(self.path, {}, self.headers.get("authorization", ""),
                                                       method="GET")
                self._send(status, headers, payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                kind = self.headers.get("content-type", "")
                if kind.startswith("multipart/form-data"):
                    fields, files = _multipart(kind, raw)
                    body = {**fields, "_files": files}
                else:
                    body = json.loads(raw or b"{}")
                status, headers, payload = fake.answer(self.path, body, self.headers.get("authorization", ""))
                self._send(status, headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    if headers.get("x-fake-stream") and fake.content_line_seconds:
                        for line in data.splitlines(keepends=True):
                            self.wfile.write(line)
                            self.wfile.flush()
                            time.sleep(fake.content_line_seconds)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the server says ---------------------------------------------------------------------------------

    def _record(self, endpoint: str, body: dict[str, Any]) -> Call:
        call = Call(time.monotonic(), endpoint, body)
        with self.lock:
            self.calls.append(call)
        return call

    def _scheduled(self, call: Call) -> tuple[int, dict[str, str], Any] | None:
        """What the failure schedule says of this call: a failure to answer, or None (go on and succeed, after
        the scheduled wait)."""
        if self.schedule is None or call.endpoint not in ("chat", "image", "edit"):
            return None
        outcome, seconds = self.schedule(call.endpoint, call.body)
        time.sleep(seconds)
        if outcome == "ok":
            return None
        status = 429 if outcome == "429" else 500
        call.status = status
        headers = {"retry-after": self.retry_after} if status == 429 else {}
        return status, headers, {"error": {"message": f"scheduled {outcome}", "type": "server_error", "code": None}}

    def _chaos(self, call: Call) -> tuple[int, dict[str, str], Any] | None:
        scheduled = self._scheduled(call)
        if scheduled is not None:
            return scheduled
        with self.lock:
            roll = self._rng.random()
            status = self._rng.choice(self.error_statuses)
        if roll >= self.error_rate:
            return None
        call.status = status
        headers = {"retry-after-ms": "100"} if status == 429 else {}
        return status, headers, {"error": {"message": f"chaos {status}", "type": "server_error", "code": None}}

    def answer(self, path: str, body: dict[str, Any], authorization: str = "",
               method: str = "POST") -> tuple[int, dict[str, str], Any]:
        if self.latency:
            time.sleep(self.latency)
        self.authorizations.add(authorization)
        if self.reject_key:
            self._record("rejected", body).status = 401
            key = authorization.removeprefix("Bearer ")
            said = f"Incorrect API key provided: {key}. Find your key at platform.openai.com ({authorization})"
            return 401, {}, {"error": {"message": said,
                                       "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
        if body.get("model") in self.unknown_models:
            self._record("unknown_model", body).status = 404
            return 404, {}, {"error": {"message": f"The model `{body['model']}` does not exist or you do not have"
                                                  " access to it.", "type": "invalid_request_error", "param": None,
                                       "code": "model_not_found"}}
        route = urllib.parse.urlsplit(path)
        if "/files" in route.path or "/batches" in route.path:
            return self._batch_api(method, route.path, urllib.parse.parse_qs(route.query), body)
        if path.endswith("/chat/completions"):
            return self._chat(body)
        if path.endswith("/images/generations"):
            return self._image(body)
        if path.endswith("/images/edits"):
            return self._image(body, endpoint="edit")
        return 404, {}, {"error": {"message": "not found"}}

    def _chat(self, body: dict[str, Any], endpoint: str = "chat") -> tuple[int, dict[str, str], Any]:
        call = self._record(endpoint, body)
        chaos = self._chaos(call)
        if chaos:
            return chaos
        if body.get("service_tier") == "flex":
            with self.lock:
                busy = self.flex_busy > 0
                self.flex_busy -= 1 if busy else 0
            if busy:  # flex processing without capacity, as OpenAI answers it
                call.status = 429
                return 429, {}, {"error": {"message": "Resource unavailable: flex processing has no capacity now",
                                           "type": "resource_unavailable", "code": "resource_unavailable"}}
        user = body["messages"][-1]["content"]
        if isinstance(user, list):  # text and an image (vision input)
            user = " ".join(part.get("text", "") for part in user if part.get("type") == "text")
        trigger = re.search(r"Trigger text: (.*)", user)
        text = trigger.group(1) if trigger else user
        title = re.search(r"Product: (.*)", user)
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        with self.lock:
            malformed = self.malformed_chat_next > 0
            if malformed:
                self.malformed_chat_next -= 1
        if self.refuse_when and self.refuse_when in user:
            message["refusal"] = "I can't help with that request."
        elif malformed:
            message["content"] = '{"lifestyle_emotional": {"prompt": "cut off'
        else:
            languages = re.search(r"Alt text languages: ([\w, -]+)\.", user)
            shop = re.search(r"Shop language: .*?\(([A-Za-z0-9-]+)\)\. Write", user)
            said = f" [{shop.group(1)}]" if shop else ""  # alt text "in" the shop's language, as a model would
            message["content"] = json.dumps({
                "lifestyle_emotional": {"prompt": f"LIFESTYLE: {text}", "alt_text": "in use" + said},
                "single_white_background": {"prompt": f"WHITE: {text}", "alt_text": "on white" + said},
                "tags": ["product", (title.group(1) if title else "item").lower()[:30]],
                "translations": [{"language": tag.strip(), "lifestyle_emotional": f"in use [{tag.strip()}]",
                                  "single_white_background": f"on white [{tag.strip()}]"}
                                 for tag in (languages.group(1).split(",") if languages else [])],
            })
        return 200, {}, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200},
            "service_tier": body.get("service_tier") or "default",
        }

    def _image(self, body: dict[str, Any], endpoint: str = "image") -> tuple[int, dict[str, str], Any]:
        call = self._record(endpoint, body)
        prompt = str(body.get("prompt", ""))
        with self.lock:
            limited = self.rate_limit_next_images > 0
            if limited:
                self.rate_limit_next_images -= 1
            hang = (self.hang_first_image_when is not None and self.hang_first_image_when in prompt
                    and prompt not in self._hung)
            if hang:
                self._hung.add(prompt)
        if limited:
            call.status = 429
            return 429, {"retry-after": self.retry_after}, {
                "error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        if hang:
            time.sleep(self.hang_seconds)
        if self.policy_when and self.policy_when in prompt:
            call.status = 400
            return 400, {}, {"error": {"message": "Your request was rejected by the safety system.",
                                       "type": "image_generation_user_error", "code": "moderation_blocked"}}
        chaos = self._chaos(call)
        if chaos:
            return chaos
        transparent = body.get("background") == "transparent"
        png = cutout_png() if transparent else self.png
        with self.lock:
            dirty = transparent and self.dirty_white_next > 0
            self.dirty_white_next -= 1 if dirty else 0
        reference = _reference_of(body) if endpoint in ("edit", "batch_edit") or body.get("images") else None
        if reference is not None:
            with self.lock:
                lose = self.lose_product_edits > 0
                self.lose_product_edits -= 1 if lose else 0
            png = _edit(reference, transparent, lose)
        if dirty:
            png = _scene()
        image_tokens = 1300 if endpoint in ("edit", "batch_edit") else 0  # an edit carries the reference photo
        encoded = base64.b64encode(png).decode()
        item = {"url": f"data:image/png;base64,{encoded}"} if self.image_as_url else {"b64_json": encoded}
        return 200, {}, {
            "created": int(time.time()), "data": [item],
            "usage": {"input_tokens": 50 + image_tokens, "output_tokens": 1056, "total_tokens": 1106 + image_tokens,
                      "input_tokens_details": {"text_tokens": 50, "image_tokens": image_tokens}},
        }

    # --- Files and Batch APIs ---------------------------------------------------------------------------------

    def _batch_api(self, method: str, path: str, query: dict[str, list[str]],
                   body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        parts = path.strip("/").split("/")[1:]  # after "v1"
        if parts == ["files"] and method == "POST":
            data = body["_files"]["file"]
            with self.lock:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = data
            self._record("files.create", {"purpose": body.get("purpose"), "bytes": len(data)})
            return 200, {}, {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                             "filename": "input.jsonl", "purpose": body.get("purpose", "batch"), "status": "processed"}
        if len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            self._record("files.content", {"file_id": parts[1]})
            if parts[1] not in self.files:
                return 404, {}, {"error": {"message": "No such file", "code": None}}
            return 200, {"x-fake-stream": "1"}, self.files[parts[1]]
        if parts == ["batches"] and method == "POST":
            self._record("batches.create", body)
            if self.refuse_batches:
                return 400, {}, {"error": {"message": "The input file is invalid: line 1 is malformed.",
                                           "type": "invalid_request_error", "code": "invalid_request"}}
            if body.get("input_file_id") not in self.files:
                return 400, {}, {"error": {"message": "input file not found", "code": "invalid_request"}}
            with self.lock:
                batch_id = f"batch_{len(self.batches) + 1}"
                lines = self.files[body["input_file_id"]].splitlines()
                self.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                    "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                    "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                    "metadata": body.get("metadata"), "_created": time.monotonic(),
                    "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            return 200, {}, self._public(self.batches[batch_id])
        if parts == ["batches"] and method == "GET":
            self._record("batches.list", {})
            with self.lock:
                items = sorted(self.batches.values(), key=lambda b: b["_created"], reverse=True)
            after = (query.get("after") or [None])[0]
            if after is not None:
                ids = [b["id"] for b in items]
                items = items[ids.index(after) + 1:] if after in ids else []
            limit = int((query.get("limit") or ["20"])[0])
            page = items[:limit]
            return 200, {}, {"object": "list", "data": [self._public(b) for b in page],
                             "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
                             "has_more": len(items) > limit}
        if len(parts) >= 2 and parts[0] == "batches" and parts[1] in self.batches:
            batch = self.batches[parts[1]]
            if len(parts) == 3 and parts[2] == "cancel":
                self._record("batches.cancel", {"id": batch["id"]})
                with self.lock:
                    if batch["status"] in ("validating", "in_progress", "finalizing"):
                        batch["status"] = "cancelling"
                return 200, {}, self._public(batch)
            self._record("batches.retrieve", {"id": batch["id"]})
            self._advance(batch)
            return 200, {}, self._public(batch)
        return 404, {}, {"error": {"message": f"not found: {method} {path}"}}

    def _take_failure(self) -> bool:
        with self.lock:
            if self.batch_fail_times <= 0:
                return False
            self.batch_fail_times -= 1
            return True

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _advance(self, batch: dict[str, Any]) -> None:
        """Run a batch's lines once its delay has passed (as OpenAI would, some time after creation)."""
        with self.lock:
            if batch["status"] == "cancelling":
                batch["status"] = "cancelled"
                return
            if batch["status"] not in ("validating", "in_progress"):
                return
            if time.monotonic() - batch["_created"] < self.batch_delay:
                batch["status"] = "in_progress"
                return
            batch["status"] = "finalizing"
            lines = self.files[batch["input_file_id"]].splitlines()
            expire_after, self.batch_expire_after = self.batch_expire_after, None
        output: list[bytes] = []
        errors: list[bytes] = []
        for index, raw in enumerate(lines):
            request = json.loads(raw)
            request_id = f"batch_req_{batch['id']}_{index}"
            if expire_after is not None and index >= expire_after:
                errors.append(json.dumps({"id": request_id, "custom_id": request["custom_id"], "response": None,
                                          "error": {"code": "batch_expired", "message": "This request could not "
                                                    "be executed before the completion window expired."}}).encode())
                continue
            body = request["body"]
            if self.batch_fail_when and self.batch_fail_when in json.dumps(body) and self._take_failure():
                status, payload = 500, {"error": {"message": "The server had an error", "type": "server_error",
                                                  "code": "server_error"}}
            elif request["url"] == "/v1/chat/completions":
                status, _, payload = self._chat(body, endpoint="batch_chat")
            elif request["url"] == "/v1/images/edits":
                status, _, payload = self._image(body, endpoint="batch_edit")
            else:
                status, _, payload = self._image(body, endpoint="batch_image")
            line = json.dumps({"id": request_id, "custom_id": request["custom_id"],
                               "response": {"status_code": status, "request_id": request_id, "body": payload},
                               "error": None}).encode()
            (output if status == 200 else errors).append(line)
        with self.lock:
            for name, content in (("output_file_id", output), ("error_file_id", errors)):
                if content:
                    file_id = f"file-{len(self.files) + 1}"
                    self.files[file_id] = b"\n".join(content) + b"\n"
                    batch[name] = file_id
            expired = expire_after is not None and expire_after < len(lines)
            batch["status"] = "expired" if expired else "completed"
            batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}

    def count(self, endpoint: str, predicate: Callable[[Call], bool] = lambda c: True) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.endpoint == endpoint and predicate(c))
