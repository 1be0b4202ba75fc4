"""The HTTP API of ``translate serve`` (FastAPI): one translator, dynamic batching, a page.

Every request passes one guard (``_Edge``, a plain ASGI middleware): it refuses a body over
``max_bytes`` from its Content-Length before reading it (and counts the bytes of bodies without
one, stopping at the limit), turns anything unexpected into a one-line 500 logged here with its
traceback, and counts requests, status codes and latency for ``/metrics``. Errors a client can cause
are ``ApiError`` (a status, a kind for the metrics, one line of text) answered as
``{"error": "..."}``. Decoding and encoding run on threads, inference on the batcher's thread, so
the event loop only moves bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
import time
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..runtime import SEED_RANGE, ImageTooLarge, Translator, UnreadableImage, decode_bytes, encode_bytes, noise_seed
from .batcher import Batcher, Busy
from .metrics import Metrics
from .page import page_html

log = logging.getLogger("translate.serve")

FORMATS = {"png": ("PNG", "image/png", "png"), "jpg": ("JPEG", "image/jpeg", "jpg"),
           "jpeg": ("JPEG", "image/jpeg", "jpg"), "webp": ("WEBP", "image/webp", "webp")}
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_BYTES = 32 << 20
MAX_IMAGES_PER_REQUEST = 16
PNG_LEVEL = 1  # zlib level of PNG responses: 4x faster to write than Pillow's default 6, ~6 % larger


@dataclass
class Settings:
    """What ``translate serve``'s options set (see ``translate serve --help``)."""

    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, checked from its header before decoding
    max_bytes: int = DEFAULT_MAX_BYTES  # per request body, checked before it is read
    api_key: str | None = None
    model_name: str | None = None  # shown by the page and /v1/model [the model file's name]
    max_queued_pixels: int | None = None  # images waiting for the model [4 x max_pixels]


class ApiError(Exception):
    """A request the server refuses: answered ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, " ".join(message.split()), headers


KIND_OF_STATUS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                  413: "too_many_bytes", 415: "not_an_image", 503: "not_ready"}

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"},
                "format": {"type": "string"}, "quality": {"type": "integer"}, "seed": {"type": "integer"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
            "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}},
    }
}
ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"error": e}}}} for s, d, e in [
    (400, "empty body, corrupt image or bad parameter", "truncated or corrupt image (OSError: image file is truncated)"),
    (401, "no or wrong API key", "missing or wrong API key: send the header 'Authorization: Bearer KEY'"),
    (413, "body over --max-bytes or image over --max-pixels", "the image is too large (...)"),
    (415, "not an image", "not an image of a format read here (png, jpeg, webp, gif, bmp, tiff, ppm, tga)"),
    (503, "loading, stopping, or too many images waiting", "busy: 40 images are waiting already; retry shortly"),
]}
FORMAT_DOC = "Output format: png (default), jpg or webp (also a multipart form field)."
QUALITY_DOC = "jpg / webp quality, 1-100 [95]."
SEED_DOC = "Noise seed for models with noise (pix2pix): the same seed gives the same output [fresh noise]."


class _State:
    """What the app's handlers share: the translator, the batcher, the metrics."""

    def __init__(self, translator: Translator, settings: Settings) -> None:
        self.translator = translator
        self.settings = settings
        self.name = settings.model_name or translator.path.name
        self.batcher = Batcher(lambda arrays, seeds: translator.run_same_shape(arrays, seeds=seeds),
                               max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000.0,
                               max_queued_pixels=settings.max_queued_pixels or 4 * settings.max_pixels)
        self.metrics = Metrics(settings.max_batch, lambda: self.batcher.depth)
        self.batcher.on_batch = self.metrics.observe_batch
        self.key_digest = hashlib.sha256(settings.api_key.encode()).digest() if settings.api_key else None
        self.ready = False
        self.stopping = False
        self.rng = np.random.default_rng()

    # errors ---------------------------------------------------------------------------------------
    def error_response(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
        self.metrics.errors.labels(kind).inc()
        return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)

    def check_key(self, request: Request) -> None:
        """Bearer key, compared in constant time (digests of equal length, whatever was sent)."""
        if self.key_digest is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        sent = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        if not (hmac.compare_digest(sent, self.key_digest) and scheme.lower() == "bearer"):
            raise ApiError(401, "unauthorized", "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           {"WWW-Authenticate": "Bearer"})

    def check_ready(self) -> None:
        if self.stopping:
            raise ApiError(503, "not_ready", "the server is stopping; retry on another instance", {"Retry-After": "1"})
        if not self.ready:
            raise ApiError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})

    # the work -------------------------------------------------------------------------------------
    async def decode(self, data: bytes) -> np.ndarray:
        try:
            return await asyncio.to_thread(decode_bytes, data, max_pixels=self.settings.max_pixels)
        except ImageTooLarge as exc:
            raise ApiError(413, "too_many_pixels", f"{exc}; the server takes at most {self.settings.max_pixels} "
                                                   f"pixels per image (--max-pixels)") from None
        except UnreadableImage as exc:
            kind, status = (("not_an_image", 415) if str(exc).startswith("not an image") else ("corrupt_image", 400))
            raise ApiError(status, kind, str(exc)) from None

    async def translate(self, rgba: np.ndarray, seed: int | None):
        """-> (rgb out, alpha or None, batcher Result, the noise seed used)."""
        alpha = rgba[..., 3] if rgba.shape[2] == 4 else None
        rgb = np.ascontiguousarray(rgba[..., :3])
        used = noise_seed(seed) if seed is not None else int(self.rng.integers(0, SEED_RANGE))
        result = await self.batcher.submit(rgb, used)
        return result.image, alpha, result, used

    def reserve(self, arrays: list[np.ndarray]) -> None:
        try:
            self.batcher.reserve(sum(a.shape[0] * a.shape[1] for a in arrays))
        except Busy as exc:
            raise ApiError(503, "busy", f"busy: {exc}; retry shortly", {"Retry-After": "1"}) from None

    def model_info(self) -> dict[str, Any]:
        t, m = self.translator, self.translator.metadata
        s = self.settings
        as_int = (lambda v: int(v) if v is not None and str(v).isdigit() else v)
        return {
            "name": self.name, "file": t.path.name, "family": m.get("family"), "generator": m.get("generator"),
            "direction": m.get("direction"), "train_size": as_int(m.get("train_size")),
            "precision": m.get("precision", "fp32"), "provider": t.provider, "noise": t.info.noise,
            "size_multiple": t.multiple, "min_side": t.info.min_side, "step": as_int(m.get("step")),
            "version": m.get("version"), "config_hash": m.get("config_hash"), "server_version": __version__,
            "limits": {"max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms, "max_pixels": s.max_pixels,
                       "max_bytes": s.max_bytes, "max_images_per_request": MAX_IMAGES_PER_REQUEST},
        }


# request parsing ---------------------------------------------------------------------------------
async def read_upload(request: Request, max_images: int) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The images of a request, in order, and its form fields: a multipart form (every file field,
    whatever its name) or the raw body (one image)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max(max_images, MAX_IMAGES_PER_REQUEST), max_fields=16)
        except StarletteHTTPException as exc:
            many = "Too many files" in str(exc.detail)
            raise ApiError(413 if many else 400, "too_many_images" if many else "bad_multipart",
                           f"{exc.detail} (at most {MAX_IMAGES_PER_REQUEST} images per request)" if many
                           else f"bad multipart body: {exc.detail}") from None
        try:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files.append((value.filename or key, await value.read()))
                else:
                    fields[key] = value
        finally:
            await form.close()
    else:
        body = await request.body()
        if body:
            files.append(("image", body))
    files = [f for f in files if f[1]]
    if not files:
        raise ApiError(400, "empty_body", "empty body: send an image as the body (curl --data-binary @photo.jpg) "
                                          "or as a multipart file (curl -F image=@photo.jpg)")
    return files, fields


@dataclass
class Options:
    fmt: str
    mime: str
    ext: str
    quality: int | None
    seed: int | None


def parse_options(query: dict[str, str | None], fields: dict[str, str]) -> Options:
    """format / quality / seed from the query string, else from the form fields."""
    def get(name: str) -> str | None:
        value = query.get(name)
        return value if value not in (None, "") else (fields.get(name) or None)

    fmt = (get("format") or "png").lower()
    if fmt not in FORMATS:
        raise ApiError(400, "bad_format", f"unsupported format {fmt[:20]!r}: choose png, jpg or webp")
    quality = get("quality")
    if quality is not None and not (quality.isdigit() and 1 <= int(quality) <= 100):
        raise ApiError(400, "bad_parameter", f"quality must be a whole number from 1 to 100, not {quality[:20]!r}")
    seed = get("seed")
    if seed is not None and not (seed.isdigit() and len(seed) <= 20):
        raise ApiError(400, "bad_parameter", f"seed must be a whole number from 0, not {seed[:20]!r}")
    pil, mime, ext = FORMATS[fmt]
    return Options(pil, mime, ext, int(quality) if quality else None, int(seed) if seed is not None else None)


def safe_stem(name: str, index: int) -> str:
    """A client's file name, reduced to a harmless stem for names inside the zip (never a path)."""
    stem = Path(name.replace("\\", "/").split("/")[-1]).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or f"image{index}"


def timing(**parts: float) -> str:
    return ", ".join(f"{k};dur={v * 1000:.1f}" for k, v in parts.items())


# the guard ---------------------------------------------------------------------------------------
class _Edge:
    """Body cap, last-resort 500s and request metrics, around the whole app (plain ASGI)."""

    def __init__(self, app, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state, metrics = self.state, self.state.metrics
        endpoint = metrics.endpoint(scope["path"])
        started = time.perf_counter()
        sent = {"status": 500, "started": False}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"], sent["started"] = message["status"], True
            await send(message)

        async def reply(response: Response) -> None:
            await response(scope, receive, send_wrapper)

        metrics.in_flight.inc()
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                limit = state.settings.max_bytes
                length = dict(scope["headers"]).get(b"content-length")
                if length is not None and (not length.isdigit() or int(length) > limit):
                    # refused from the header: not a byte of the body is read
                    return await reply(state.error_response(
                        413, "too_many_bytes", f"the body is {length.decode(errors='replace')[:20]} bytes, over the "
                                               f"server's limit of {limit} bytes (--max-bytes)"))
                receive = _capped(receive, limit)
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:  # gone before its body was read: nothing to answer, nothing wrong here
            log.debug("client went away during %s %s", scope["method"], scope["path"])
            sent["status"] = 499  # (nginx's code for it, in the metrics only)
            metrics.errors.labels("client_disconnected").inc()
        except Exception:  # noqa: BLE001 - anything unexpected: one line to the client, the traceback here
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if not sent["started"]:
                await reply(state.error_response(500, "internal", "internal server error; the details are in the "
                                                                  "server's log"))
            else:
                metrics.errors.labels("internal").inc()
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(endpoint, str(sent["status"])).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def _capped(receive, limit: int):
    """``receive`` that stops a body without a Content-Length at ``limit`` bytes."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "too_many_bytes", f"the body is over the server's limit of {limit} bytes "
                                                      f"(--max-bytes)")
        return message

    return wrapped


# the app -----------------------------------------------------------------------------------------
def create_app(translator: Translator, settings: Settings | None = None) -> FastAPI:
    """The ASGI app serving ``translator`` (run it with uvicorn, as ``translate serve`` does)."""
    settings = settings or Settings()
    if settings.max_batch < 1 or settings.max_wait_ms < 0 or settings.max_pixels < 1 or settings.max_bytes < 1:
        raise ValueError(f"bad serve settings {settings}")
    state = _State(translator, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.batcher.start()
        state.ready = True
        yield
        state.stopping = True
        await state.batcher.stop()
        log.info("stopped: every request in flight was answered")

    app = FastAPI(title="translate", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Image-to-image translation with an exported GAN generator "
                              f"({state.name}). Errors are JSON: {{\"error\": \"one line\"}}.")
    app.state.translate = state
    page = page_html({"mode": "server"})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return state.error_response(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.url.path[:100]}; the API is described at /docs"
        elif exc.status_code == 405:
            detail = f"{request.method} is not accepted by {request.url.path[:100]}; the API is described at /docs"
        return state.error_response(exc.status_code, KIND_OF_STATUS.get(exc.status_code, "bad_request"), detail,
                                    getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return state.error_response(400, "bad_parameter", f"{where}: {first.get('msg')}" if where else first["msg"])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="Ready to translate?", responses={503: ERRORS[503]})
    async def healthz() -> Response:
        """200 once the model is loaded and the batcher runs; 503 while loading or stopping."""
        if state.stopping or not state.ready:
            return JSONResponse({"status": "stopping" if state.stopping else "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "model": state.name})

    @app.get("/metrics", summary="Prometheus metrics", responses={401: ERRORS[401]})
    async def metrics(request: Request) -> Response:
        """Requests by endpoint and status, errors by kind, latency, batch-size and inference-time
        histograms, queue depth (Prometheus text format)."""
        state.check_key(request)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.get("/v1/model", summary="The model's metadata and the server's limits", responses={401: ERRORS[401]})
    async def model(request: Request) -> dict[str, Any]:
        state.check_key(request)
        return state.model_info()

    @app.post("/v1/translate", summary="Translate one image", openapi_extra=IMAGE_BODY, response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                               "description": "the translated image, the size of the input; headers X-Model, "
                                              "X-Batch-Size, X-Seed (models with noise), Server-Timing"},
                         **{s: ERRORS[s] for s in (400, 401, 413, 415, 503)}})
    async def translate(request: Request, fmt: str | None = Query(None, alias="format", description=FORMAT_DOC),
                        quality: str | None = Query(None, description=QUALITY_DOC),
                        seed: str | None = Query(None, description=SEED_DOC)) -> Response:
        """The image as the raw body or a multipart file; any size (padded, tiled when huge), RGBA
        keeps its alpha (png, webp), EXIF orientation applied, as `translate run` does."""
        state.check_key(request)
        state.check_ready()
        t0 = time.perf_counter()
        files, fields = await read_upload(request, 1)
        if len(files) > 1:
            raise ApiError(400, "too_many_images", "send one image here; /v1/translate/batch takes several")
        opts = parse_options({"format": fmt, "quality": quality, "seed": seed}, fields)
        rgba = await state.decode(files[0][1])
        t1 = time.perf_counter()
        state.reserve([rgba])
        out, alpha, result, used = await state.translate(rgba, opts.seed)
        t2 = time.perf_counter()
        body = await asyncio.to_thread(encode_bytes, out, opts.fmt, alpha, quality=opts.quality,
                                       compress_level=PNG_LEVEL)
        t3 = time.perf_counter()
        headers = {"X-Model": state.name, "X-Batch-Size": str(result.batch_size),
                   "Server-Timing": timing(decode=t1 - t0, queue=result.queued_s, infer=result.infer_s,
                                           encode=t3 - t2, total=t3 - t0)}
        if state.translator.info.noise:
            headers["X-Seed"] = str(used)
        return Response(body, media_type=opts.mime, headers=headers)

    @app.post("/v1/translate/batch", summary="Translate several images", openapi_extra=BATCH_BODY,
              response_class=Response,
              responses={200: {"content": {"application/zip": {}, "multipart/mixed": {}},
                               "description": "a zip (default) or, with 'Accept: multipart/mixed', a multipart body: "
                                              "the results in order, and results.json (index, name, file or error)"},
                         **{s: ERRORS[s] for s in (400, 401, 413, 503)}})
    async def translate_batch(request: Request,
                              fmt: str | None = Query(None, alias="format", description=FORMAT_DOC),
                              quality: str | None = Query(None, description=QUALITY_DOC),
                              seed: str | None = Query(None, description=SEED_DOC)) -> Response:
        """Up to 16 images as multipart file fields (any names), translated in order. An image that
        cannot be read is reported in results.json (and its part) and the others are done; with a
        seed, every image gets that seed, as `Translator(seed=S).batch` does."""
        state.check_key(request)
        state.check_ready()
        t0 = time.perf_counter()
        files, fields = await read_upload(request, MAX_IMAGES_PER_REQUEST)
        opts = parse_options({"format": fmt, "quality": quality, "seed": seed}, fields)
        decoded = await asyncio.gather(*(state.decode(data) for _, data in files), return_exceptions=True)
        for d in decoded:  # only client errors are reported per image; anything else is a 500
            if isinstance(d, BaseException) and not isinstance(d, ApiError):
                raise d
        good = [d for d in decoded if isinstance(d, np.ndarray)]
        if not good:
            first = decoded[0]
            assert isinstance(first, ApiError)
            raise ApiError(first.status, first.kind, f"no image could be read; the first: {first.message}")
        total = sum(a.shape[0] * a.shape[1] for a in good)
        if total > 4 * state.settings.max_pixels:
            raise ApiError(413, "too_many_pixels", f"the images hold {total} pixels together, over 4 x --max-pixels "
                                                   f"({4 * state.settings.max_pixels}); send fewer per request")
        state.reserve(good)
        results = await asyncio.gather(*(state.translate(d, opts.seed) for d in good))

        def encode_all() -> list[bytes]:
            return [encode_bytes(out, opts.fmt, alpha, quality=opts.quality, compress_level=PNG_LEVEL)
                    for out, alpha, _, _ in results]

        bodies = iter(await asyncio.to_thread(encode_all))
        seeds = iter(r[3] for r in results)
        manifest = []
        for i, ((name, _), d) in enumerate(zip(files, decoded)):
            entry: dict[str, Any] = {"index": i, "name": safe_stem(name, i)}
            if isinstance(d, ApiError):
                entry["error"] = d.message
                state.metrics.errors.labels(d.kind).inc()
            else:
                entry["file"] = f"{i:03d}-{entry['name']}.{opts.ext}"
                entry["body"] = next(bodies)
                if state.translator.info.noise:
                    entry["seed"] = next(seeds)
            manifest.append(entry)
        headers = {"X-Model": state.name, "X-Errors": str(sum("error" in e for e in manifest)),
                   "Server-Timing": timing(total=time.perf_counter() - t0)}
        listing = json.dumps([{k: v for k, v in e.items() if k != "body"} for e in manifest], indent=1)
        if "multipart/mixed" in request.headers.get("accept", ""):
            return _multipart(manifest, opts.mime, listing, headers)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # images are compressed already
            for e in manifest:
                if "body" in e:
                    z.writestr(e["file"], e["body"])
            z.writestr("results.json", listing)
        headers["Content-Disposition"] = 'attachment; filename="translated.zip"'
        return Response(buf.getvalue(), media_type="application/zip", headers=headers)

    app.add_middleware(_Edge, state=state)  # inside Starlette's last-resort handler, outside the routes' handlers
    return app


def _multipart(manifest: list[dict[str, Any]], mime: str, listing: str, headers: dict[str, str]) -> Response:
    boundary = secrets.token_hex(16)
    parts = []
    for e in manifest:
        if "body" in e:
            head, body = f"Content-Type: {mime}\r\nContent-Disposition: attachment; filename=\"{e['file']}\"", e["body"]
        else:
            head = f"Content-Type: application/json\r\nContent-Disposition: attachment; filename=\"{e['name']}.json\""
            body = json.dumps({"error": e["error"]}).encode()
        parts.append(f"--{boundary}\r\n{head}\r\nX-Index: {e['index']}\r\n\r\n".encode() + body + b"\r\n")
    parts.append(f"--{boundary}\r\nContent-Type: application/json\r\nContent-Disposition: attachment; "
                 f"filename=\"results.json\"\r\n\r\n".encode() + listing.encode() + b"\r\n")
    return Response(b"".join(parts) + f"--{boundary}--\r\n".encode(),
                    media_type=f"multipart/mixed; boundary={boundary}", headers=headers)
