"""translate serve (the HTTP API over a real uvicorn on 127.0.0.1, its page in headless Chromium)
and translate web (the static site in headless Chromium against Translator)."""
from __future__ import annotations

import http.server
import io
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from pathlib import Path

import httpx
import numpy as np
import pytest
from cdp import Chromium, chromium_path
from click.testing import CliRunner
from conftest import BLOCK_TORCH, TINY, one_line_error, write_image
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from translate.cli import cli
from translate.runtime import Translator, decode
from translate.serve.app import Settings, create_app
from translate.serve.server import bind, url_of

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures ------------------------------------------------------------------------------------
def _export_untrained(root: Path, name: str, **opts) -> Path:
    """A real export of an untrained tiny generator (speed and plumbing do not depend on training)."""
    import torch

    from translate.engine.checkpoint import save_checkpoint
    from translate.export import export_generator
    from translate.models import build_model
    from translate.run import Run
    from translate.train import build_config

    cfg = build_config({**TINY, "steps": 1, **opts})
    run = root / f"{name}-run"
    Run(run).write_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(run, 0, {k: v.contiguous() for k, v in model.state_dict().items()}, {"step": 0})
    return export_generator(run, out=root / f"{name}.onnx", quiet=True).path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    return {"cyclegan": _export_untrained(root, "cyclegan", model="cyclegan", size=32),
            # dropout in the ResNet blocks: a noise_seed input whose seed changes most pixels
            "noisy": _export_untrained(root, "noisy", model="cyclegan", size=32, dropout=0.5),
            "pix2pix": _export_untrained(root, "pix2pix", model="pix2pix", size=64)}


class LiveServer:
    """The app on a real uvicorn, in a thread, on a free port of 127.0.0.1."""

    def __init__(self, translator: Translator, **settings) -> None:
        import uvicorn

        self.app = create_app(translator, Settings(**settings))
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def metrics(self, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
        r = self.client.get("/metrics", headers=headers)
        assert r.status_code == 200, r.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def random_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)


def held_out(size: int = 64, index: int = 999) -> Image.Image:
    """A label map of the embedded data set that no run saw (training draws indices below its count)."""
    from translate.data.synthetic import render_pair

    return Image.fromarray(render_pair(size, 0, index)[0])


def error_of(r: httpx.Response) -> str:
    """The one-line JSON error every refusal carries."""
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], body
    return body["error"]


# --- no torch ------------------------------------------------------------------------------------
def test_serving_path_imports_no_torch(models):
    code = (BLOCK_TORCH +
            "import io\nfrom PIL import Image\n"
            "import translate.serve, translate.serve.web\n"
            "from translate.serve import Settings, create_app\nfrom translate.runtime import Translator\n"
            "from translate.cli import cli\nfrom fastapi.testclient import TestClient\n"
            f"app = create_app(Translator({str(models['cyclegan'])!r}), Settings())\n"
            "buf = io.BytesIO(); Image.new('RGB', (20, 12)).save(buf, 'PNG')\n"
            "with TestClient(app) as c:\n"
            "    r = c.post('/v1/translate', content=buf.getvalue())\n"
            "    assert r.status_code == 200, r.text\n"
            "    assert Image.open(io.BytesIO(r.content)).size == (20, 12)\n"
            "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]\nassert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]


# --- the API ---------------------------------------------------------------------------------------
def exif_rotated() -> bytes:
    img = random_image(40, 20, seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 20 wide, 40 high
    return png_bytes(img, "JPEG", exif=exif, quality=95)


def test_images_of_every_mode_come_back_translated(models, tmp_path):
    i16 = tmp_path / "i16.png"
    write_image(i16, size=(36, 28), mode="I;16", seed=5)
    rgba = random_image(20, 24, seed=3, mode="RGBA")
    alpha = np.random.default_rng(9).integers(0, 255, (24, 20), dtype=np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    cases = {  # name -> (encoded bytes, the size expected back, the output mode)
        "rgb": (png_bytes(random_image(40, 30)), (40, 30), "RGB"),
        "odd-jpeg": (png_bytes(random_image(33, 47, 1), "JPEG", quality=90), (33, 47), "RGB"),
        "gray": (png_bytes(random_image(64, 64, 2, "L")), (64, 64), "RGB"),
        "rgba": (png_bytes(rgba), (20, 24), "RGBA"),
        "palette": (png_bytes(random_image(30, 30, 4, "P"), "GIF"), (30, 30), "RGB"),
        "16-bit": (i16.read_bytes(), (36, 28), "RGB"),
        "exif": (exif_rotated(), (20, 40), "RGB"),
        "tiny": (png_bytes(random_image(1, 3)), (1, 3), "RGB"),
        "tiled": (png_bytes(random_image(400, 300, 6)), (400, 300), "RGB"),  # over the tile: overlapping tiles
    }
    for family in ("cyclegan", "pix2pix"):
        # a small tile so that the "tiled" case goes through the runtime's tiling, as translate run would
        reference = Translator(models[family], tile=256, seed=5)
        with LiveServer(Translator(models[family], tile=256), max_wait_ms=0) as s:
            for name, (data, size, mode) in cases.items():
                r = s.client.post("/v1/translate", content=data, params={"seed": 5})
                assert r.status_code == 200, (family, name, r.text)
                out = Image.open(io.BytesIO(r.content))
                assert (out.format, out.size, out.mode) == ("PNG", size, mode), (family, name)
                assert r.headers["X-Model"] == models[family].name and "infer;dur=" in r.headers["Server-Timing"]
                assert r.headers.get("X-Seed") == ("5" if family == "pix2pix" else None)
                # the same pixels as translate run's decoding, Translator and alpha handling, seed for seed
                src = tmp_path / f"{name}.img"
                src.write_bytes(data)
                decoded = decode(src)
                expected = reference.translate_arrays([decoded[..., :3]])[0]
                assert np.array_equal(np.asarray(out)[..., :3], expected), (family, name)
                if mode == "RGBA":
                    assert np.array_equal(np.asarray(out)[..., 3], decoded[..., 3])
            # multipart, options as form fields, other formats
            r = s.client.post("/v1/translate", files={"image": ("a.png", cases["rgba"][0], "image/png")},
                              data={"format": "webp", "quality": "80"})
            assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.text
            assert Image.open(io.BytesIO(r.content)).mode == "RGBA"  # webp keeps the alpha
            r = s.client.post("/v1/translate", content=cases["rgba"][0], params={"format": "jpg", "quality": 70})
            assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "JPEG"
            assert Image.open(io.BytesIO(r.content)).size == (20, 24)
            if family == "pix2pix":  # fresh noise when no seed is given, and X-Seed repeats it
                a = s.client.post("/v1/translate", content=cases["rgb"][0])
                again = s.client.post("/v1/translate", content=cases["rgb"][0], params={"seed": a.headers["X-Seed"]})
                assert a.content == again.content
            info = s.client.get("/v1/model").json()
            assert info["file"] == models[family].name and info["family"] == family
            assert info["noise"] == (family == "pix2pix") and info["provider"] == "cpu"
            assert info["limits"]["max_batch"] == 8 and "/" not in info["file"]
            assert s.client.get("/healthz").json()["status"] == "ready"
            assert "openapi" in s.client.get("/openapi.json").json()


def test_batch_endpoint_answers_in_order_and_reports_bad_images(models):
    imgs = [png_bytes(random_image(40, 30, 0)), b"not an image", png_bytes(random_image(24, 24, 1))]
    files = [("images", (f"../x/{n}", d, "application/octet-stream"))
             for n, d in zip(["a.png", "b.txt", "c.png"], imgs)]
    with LiveServer(Translator(models["cyclegan"])) as s:
        r = s.client.post("/v1/translate/batch", files=files)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip" and r.headers["X-Errors"] == "1"
        z = zipfile.ZipFile(io.BytesIO(r.content))
        listing = json.loads(z.read("results.json"))
        assert [e["index"] for e in listing] == [0, 1, 2] and "not an image" in listing[1]["error"]
        assert [e.get("file") for e in listing] == ["000-a.png", None, "002-c.png"]
        assert sorted(z.namelist()) == ["000-a.png", "002-c.png", "results.json"]  # no path from the client's names
        single = s.client.post("/v1/translate", content=imgs[0]).content
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(z.read("000-a.png")))),
                              np.asarray(Image.open(io.BytesIO(single))))
        assert Image.open(io.BytesIO(z.read("002-c.png"))).size == (24, 24)
        # multipart/mixed when asked for, in the same order
        r = s.client.post("/v1/translate/batch", files=files, headers={"Accept": "multipart/mixed"},
                          params={"format": "jpg"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/mixed")
        msg = BytesParser().parsebytes(b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content)
        parts = msg.get_payload()
        assert [p.get_content_type() for p in parts] == ["image/jpeg", "application/json", "image/jpeg",
                                                         "application/json"]
        assert [p["X-Index"] for p in parts[:3]] == ["0", "1", "2"]
        assert Image.open(io.BytesIO(parts[0].get_payload(decode=True))).size == (40, 30)
        # nothing readable: a 4xx naming the first problem
        r = s.client.post("/v1/translate/batch", files=[("a", ("a", b"junk")), ("b", ("b", b"junk"))])
        assert r.status_code == 415 and "no image could be read" in error_of(r)
        too_many = [("i", (f"{i}.png", imgs[2])) for i in range(17)]
        r = s.client.post("/v1/translate/batch", files=too_many)
        assert r.status_code == 413 and "16" in error_of(r)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size in a few bytes: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 1000)
    chunk2 = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + chunk + chunk2


def raw_request(url: str, headers: bytes, body: bytes) -> tuple[int, str]:
    """POST /v1/translate on a plain socket: (status, body text)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n" + headers + b"\r\n"
                     + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, text = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), text.decode()


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_bad_input_is_a_4xx_and_the_next_request_is_served(models):
    good = png_bytes(random_image(40, 30))
    t = Translator(models["cyclegan"])
    real = t.run_same_shape

    def fragile(arrays, keys=None, seeds=None):  # an unexpected failure for one shape only
        if arrays[0].shape[:2] == (13, 13):
            raise RuntimeError("something nobody expected")
        return real(arrays, keys, seeds)

    t.run_same_shape = fragile
    handler = Records()
    logging.getLogger("translate.serve").addHandler(handler)
    try:
        with LiveServer(t, max_pixels=100_000, max_bytes=300_000) as s:
            bad = [  # (request, status, kind, words in the error)
                (dict(content=b""), 400, "empty_body", "empty body"),
                (dict(content=b"hello, this is text"), 415, "not_an_image", "not an image"),
                (dict(content=good[: len(good) // 2]), 400, "corrupt_image", "truncated"),
                (dict(content=png_header_only(5000, 5000)), 413, "too_many_pixels", "--max-pixels"),
                (dict(content=png_header_only(40000, 40000)), 413, "too_many_pixels", "too large"),  # Pillow's own bomb
                (dict(content=png_bytes(Image.new("RGB", (400, 300), "gray"))), 413, "too_many_pixels", "400x300"),
                (dict(content=good, params={"format": "gif"}), 400, "bad_format", "png, jpg or webp"),
                (dict(content=good, params={"quality": "0"}), 400, "bad_parameter", "quality"),
                (dict(content=good, params={"seed": "-1"}), 400, "bad_parameter", "seed"),
                (dict(files=[("a", ("a.png", good)), ("b", ("b.png", good))]), 400, "too_many_images", "batch"),
                (dict(content=png_bytes(random_image(13, 13))), 500, "internal", "server's log"),
            ]
            for req, status, kind, words in bad:
                r = s.client.post("/v1/translate", **req)
                assert r.status_code == status, (kind, r.status_code, r.text)
                assert words in error_of(r), (kind, r.text)
                ok = s.client.post("/v1/translate", content=good)  # the server keeps serving
                assert ok.status_code == 200 and Image.open(io.BytesIO(ok.content)).size == (40, 30)
            # over --max-bytes: refused from the Content-Length before any of the body is sent, or
            # (no Content-Length) once the bytes read pass the limit
            status, text = raw_request(s.url, b"Content-Length: 300001\r\n", b"")
            assert status == 413 and "--max-bytes" in json.loads(text)["error"]
            chunks = b"".join(b"%x\r\n" % 10_000 + b"\0" * 10_000 + b"\r\n" for _ in range(31)) + b"0\r\n\r\n"
            status, text = raw_request(s.url, b"Transfer-Encoding: chunked\r\n", chunks)
            assert status == 413 and "--max-bytes" in json.loads(text)["error"]
            assert s.client.post("/v1/translate", content=good).status_code == 200
            r = s.client.get("/nope")
            assert r.status_code == 404 and "no such endpoint" in error_of(r)
            r = s.client.get("/v1/translate")
            assert r.status_code == 405 and error_of(r)
            counts = s.metrics()
            for _, _, kind, _ in bad:
                expected = sum(1 for b in bad if b[2] == kind)
                assert counts[("translate_errors_total", (("kind", kind),))] == expected, kind
            assert counts[("translate_errors_total", (("kind", "too_many_bytes"),))] == 2
            assert counts[("translate_requests_total", (("endpoint", "/v1/translate"), ("status", "200")))] == \
                len(bad) + 1
            assert counts[("translate_requests_total", (("endpoint", "other"), ("status", "404")))] == 1
    finally:
        logging.getLogger("translate.serve").removeHandler(handler)
    # the 500's traceback is in the server's log, not in the answer
    errors = [r for r in handler.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "something nobody expected" in str(errors[0].exc_info[1])


def test_api_key(models, tmp_path, monkeypatch):
    key = "k3y-" + "x" * 30
    good = png_bytes(random_image(16, 16))
    with LiveServer(Translator(models["cyclegan"]), api_key=key) as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"},
                        {"Authorization": f"Bearer {key}x"}):
            r = s.client.post("/v1/translate", content=good, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer" and "API key" in error_of(r)
            assert s.client.get("/v1/model", headers=headers).status_code == 401
            assert s.client.get("/metrics", headers=headers).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert s.client.post("/v1/translate", content=good, headers=auth).status_code == 200
        assert s.client.post("/v1/translate/batch", files=[("a", ("a.png", good))], headers=auth).status_code == 200
        assert s.client.get("/v1/model", headers=auth).json()["name"] == models["cyclegan"].name
        assert s.client.get("/healthz").status_code == 200 and s.client.get("/").status_code == 200  # probes, page
        assert s.metrics(auth)[("translate_errors_total", (("kind", "unauthorized"),))] == 12
    # the CLI: a key file that is missing or too short is refused in one line, before anything listens
    runner = CliRunner()
    (tmp_path / "short.txt").write_text("abc\n")
    for args, words in [(["--api-key-file", tmp_path / "missing.txt"], "cannot read"),
                        (["--api-key-file", tmp_path / "short.txt"], "at least 16 characters"),
                        (["--max-batch", "0"], "--max-batch"), (["--max-wait-ms", "-1"], "--max-wait-ms")]:
        r = runner.invoke(cli, ["serve", str(models["cyclegan"]), *map(str, args)])
        one_line_error(r.exit_code, r.output, words)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(cli, ["serve"])
    one_line_error(r.exit_code, r.output, "export/ holds no .onnx")


def test_serve_picks_its_model_as_translate_run_does(models, tmp_path, monkeypatch):
    """MODEL.onnx, --checkpoint RUN (exported on the fly, once) or the newest file in export/."""
    from translate.serve import server

    started = []
    monkeypatch.setattr(server, "run_server", lambda translator, settings, **kw: started.append((translator, kw)))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    run = models["cyclegan"].parent / "cyclegan-run"  # the run the fixture exported from
    r = runner.invoke(cli, ["serve", "--checkpoint", str(run), "--port", "0", "--max-batch", "4"])
    assert r.exit_code == 0, r.output
    translator, kw = started[-1]
    assert translator.path.parent == Path("export") and translator.path.name.startswith("cyclegan-run-step-")
    assert translator.batch_size == 4 and kw["host"] == "127.0.0.1" and kw["port"] == 0
    r = runner.invoke(cli, ["serve"])  # the export just made is the newest in export/
    assert r.exit_code == 0 and started[-1][0].path == translator.path, r.output
    assert "the newest model in export/" in r.output
    r = runner.invoke(cli, ["serve", str(models["cyclegan"]), "--checkpoint", str(run)])
    one_line_error(r.exit_code, r.output, "give one")


def test_exposed_without_a_key_warns(models, monkeypatch):
    from translate.errors import ConfigError
    from translate.serve import server

    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and server.is_loopback("localhost")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("192.168.1.4")

    def no_bind(host, port):  # stop before anything listens beyond this machine
        raise ConfigError("not binding in a test")

    monkeypatch.setattr(server, "bind", no_bind)
    handler = Records()
    logging.getLogger("translate.serve").addHandler(handler)
    try:
        for key, warned in ((None, True), ("k" * 20, False)):
            handler.records.clear()
            with pytest.raises(ConfigError):
                server.run_server(Translator(models["cyclegan"]), Settings(api_key=key), host="0.0.0.0", port=0)
            assert any("without an API key" in r.getMessage() for r in handler.records) == warned
    finally:
        logging.getLogger("translate.serve").removeHandler(handler)


def test_metrics_count_what_happened(models):
    good = png_bytes(random_image(32, 32))
    with LiveServer(Translator(models["cyclegan"]), max_wait_ms=0) as s:
        for _ in range(3):
            assert s.client.post("/v1/translate", content=good).status_code == 200
        assert s.client.post("/v1/translate", content=b"nope").status_code == 415
        assert s.client.post("/v1/translate/batch", files=[("a", ("a.png", good)), ("b", ("b.png", good))]).is_success
        m = s.metrics()
        req = lambda ep, st: m.get(("translate_requests_total", (("endpoint", ep), ("status", st))), 0)  # noqa: E731
        assert req("/v1/translate", "200") == 3 and req("/v1/translate", "415") == 1
        assert req("/v1/translate/batch", "200") == 1
        assert m[("translate_errors_total", (("kind", "not_an_image"),))] == 1
        assert m[("translate_images_total", ())] == 5
        assert m[("translate_request_duration_seconds_count", (("endpoint", "/v1/translate"),))] == 4
        assert m[("translate_batch_size_sum", ())] == 5  # every image went through one inference call
        assert m[("translate_inference_duration_seconds_count", ())] == m[("translate_batch_size_count", ())]
        assert m[("translate_queue_depth", ())] == 0 and m[("translate_requests_in_flight", ())] == 1  # this one


def raw_post(url: str, body: bytes) -> socket.socket:
    """Send a whole request on a plain socket (and let the caller hang up without reading)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_dynamic_batching_merges_concurrent_requests_of_one_shape(models):
    a = [png_bytes(random_image(40, 40, i)) for i in range(5)]  # one shape
    b = [png_bytes(random_image(32, 24, 10 + i)) for i in range(3)]  # another
    t = Translator(models["cyclegan"])
    with LiveServer(t, max_batch=8, max_wait_ms=1500) as s:
        depth = lambda: s.metrics()[("translate_queue_depth", ())]  # noqa: E731
        # the first client sends its image and hangs up once the image waits for its batch
        gone = raw_post(s.url, a[0])
        wait_until(lambda: depth() == 1)
        gone.close()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(s.client.post, "/v1/translate", content=d) for d in a[1:] + b]
            answers = [f.result() for f in futures]
        assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
        assert [r.headers["X-Batch-Size"] for r in answers] == ["5"] * 4 + ["3"] * 3
        m = s.metrics()
        assert m[("translate_batch_size_count", ())] == 2 and m[("translate_batch_size_sum", ())] == 8
        assert m[("translate_batch_size_bucket", (("le", "3.0"),))] == 1  # one batch of 3 (shape b)
        assert m[("translate_batch_size_bucket", (("le", "4.0"),))] == 1
        assert m[("translate_batch_size_bucket", (("le", "5.0"),))] == 2  # one of 5 (shape a, with the one gone)
        # batched outputs are the same as one at a time
        for d, r in zip(a[1:] + b, answers):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))),
                                  np.asarray(t(Image.open(io.BytesIO(d)))))
        # and the server goes on: a full batch goes at once, without waiting
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda d: s.client.post("/v1/translate", content=d), a + a[:3]))
        assert all(r.status_code == 200 for r in answers)
        assert any(r.headers["X-Batch-Size"] == "8" for r in answers)


def test_graceful_stop_finishes_the_request_in_flight(models, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "translate", "serve", str(models["cyclegan"]), "--port", "0",
                             "--max-wait-ms", "2000"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env, cwd=tmp_path)
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None:
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
            if " at http://127.0.0.1:" in line:
                url = line.split(" at ")[1].split()[0]
        threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_until(lambda: client.get("/healthz").status_code == 200)
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(client.post, "/v1/translate", content=png_bytes(random_image(24, 20)))
                wait_until(lambda: 'translate_queue_depth 1.0' in client.get("/metrics").text)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                # no new connections are taken while the request in flight still waits for its batch
                def refused() -> bool:
                    try:
                        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
                        return False
                    except OSError:
                        return True
                wait_until(refused, timeout=10)
                r = answer.result(timeout=30)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (24, 20)
        assert proc.wait(timeout=30) == 0, "".join(lines)
        assert time.monotonic() - sent > 0.5  # it waited for the request rather than dropping it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    assert "every request in flight was answered" in log and "server stopped" in log and "Traceback" not in log


# --- in Chromium -----------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="needs Chromium (Debian package chromium)")

PIXELS_OF = """(async () => {{
  const el = document.querySelector({selector!r});
  let canvas = el;
  if (el.tagName === 'IMG') {{
    await el.decode();
    canvas = document.createElement('canvas');
    canvas.width = el.naturalWidth; canvas.height = el.naturalHeight;
    canvas.getContext('2d').drawImage(el, 0, 0);
  }}
  const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let s = '';
  for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode.apply(null, d.subarray(i, i + 8192));
  return [canvas.width, canvas.height, btoa(s)];
}})()"""


def pixels(page, selector: str) -> np.ndarray:
    import base64

    w, h, data = page.eval(PIXELS_OF.format(selector=selector))
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)


@needs_chromium
def test_the_page_translates_an_uploaded_image_in_chromium(models, tmp_path):
    img = held_out(64)
    path = tmp_path / "held-out.png"
    img.crop((0, 0, 56, 44)).save(path)
    with LiveServer(Translator(models["cyclegan"])) as s, Chromium() as browser:
        page = browser.new_page(s.url + "/")
        page.wait_for(f"document.getElementById('model').textContent.includes({models['cyclegan'].name!r})")
        assert page.eval("document.querySelectorAll('script[src], link[href], img[src^=http]').length") == 0
        page.set_files("#file", [path])
        state = page.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
        assert state == "done", page.eval("document.getElementById('status').textContent")
        out = pixels(page, "#output")
        assert out.shape == (44, 56, 4)
        assert out[..., :3].std() > 5  # not blank
        expected = np.asarray(Translator(models["cyclegan"])(Image.open(path)))
        assert np.abs(out[..., :3].astype(int) - expected).max() <= 1  # the PNG as the server sent it
        assert page.eval("[document.getElementById('download').download, "
                         "document.getElementById('download').classList.contains('hidden')]") == \
            ["held-out-translated.png", False]
        assert s.metrics()[("translate_images_total", ())] == 1


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def ort_web():
    from translate.serve.web import local_ort_web

    dist = local_ort_web(ROOT / "build", install=True, timeout=180)  # what 'make web-deps' installs
    if dist is None:
        pytest.skip("needs onnxruntime-web from npm (make web-deps; no npm or no registry here)")
    return dist


@needs_chromium
def test_translate_web_equals_translator_in_chromium(models, ort_web, tmp_path):
    site = tmp_path / "site"
    r = CliRunner().invoke(cli, ["web", str(models["noisy"]), str(site), "--ort-web", str(ort_web)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in site.iterdir()) == sorted(
        ["index.html", "model.onnx", "ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"])
    small = tmp_path / "small.png"
    held_out(64).crop((3, 5, 48, 42)).save(small)  # 45 x 37: padded to the size multiple and cropped back
    large = tmp_path / "large.png"
    held_out(640, 998).crop((0, 0, 600, 530)).save(large)  # over the page's 512 px tile: tiled as the runtime does
    handler = lambda *a, **kw: _Quiet(*a, directory=str(site), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with Chromium() as browser:
            page = browser.new_page(f"http://127.0.0.1:{httpd.server_address[1]}/")
            page.wait_for("document.body.dataset.model", timeout=60)
            assert page.eval("document.body.dataset.model") == "ready", page.eval("document.getElementById('model')"
                                                                                  ".textContent")
            assert page.eval("!document.getElementById('seed-field').classList.contains('hidden')")
            for path, seed, tile in ((small, 1234, 1024), (large, 77, 512)):
                page.eval(f"document.getElementById('seed').value = '{seed}'; document.body.dataset.state = 'idle'")
                page.set_files("#file", [path])
                state = page.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                                      "document.body.dataset.state", timeout=120)
                assert state == "done", page.eval("document.getElementById('status').textContent")
                assert page.eval("document.body.dataset.seed") == str(seed)
                got = pixels(page, "#canvas")[..., :3].astype(int)
                img = Image.open(path)
                expected = np.asarray(Translator(models["noisy"], seed=seed, tile=tile)(img)).astype(int)
                assert got.shape == expected.shape
                assert np.abs(got - expected).max() <= 2, (path.name, np.abs(got - expected).max())
                # the check has teeth: another seed moves many pixels by more than that
                other = np.asarray(Translator(models["noisy"], seed=seed + 1, tile=tile)(img)).astype(int)
                assert (np.abs(other - expected) > 2).mean() > 0.2
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_translate_web_refusals(models, tmp_path, monkeypatch):
    from translate.serve import web

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("mine")
    runner = CliRunner()
    r = runner.invoke(cli, ["web", str(models["cyclegan"]), str(site)])
    one_line_error(r.exit_code, r.output, "already holds index.html", "--overwrite")
    assert (site / "index.html").read_text() == "mine"
    monkeypatch.setattr(web.shutil, "which", lambda name: None)  # no npm, and nothing in the (test's) cache
    monkeypatch.delenv(web.ORT_WEB_ENV, raising=False)
    r = runner.invoke(cli, ["web", str(models["cyclegan"]), str(tmp_path / "other")])
    one_line_error(r.exit_code, r.output, "npm is not installed", "--ort-web")
    r = runner.invoke(cli, ["web", str(models["cyclegan"]), str(tmp_path / "o2"), "--ort-web", str(tmp_path)])
    one_line_error(r.exit_code, r.output, "holds no onnxruntime-web")
    r = runner.invoke(cli, ["web", str(tmp_path / "nope.onnx"), str(tmp_path / "o3")])
    one_line_error(r.exit_code, r.output, "nope.onnx")
