"""``translate serve`` under load, against ``Translator.batch`` on the same images in the same run;
and one image translated inside headless Chromium (``translate web``, WebAssembly) beside
onnxruntime's Python CPU time.

    python bench/serve_speed.py --json bench/results/serve_speed.json
    python bench/serve_speed.py --model export/h2z.onnx --clients 1 4 16 --requests 48

- The model: the default CycleGAN generator (ResNet-9, 11.4 M parameters) exported untrained at
  256 px (speed does not depend on the weights), or ``--model FILE.onnx``.
- Images: ``--size`` px JPEGs, the last facades photos of ../shared/datasets when present (else
  random pixels), decoded once for the direct path.
- Direct: ``Translator.batch`` over the decoded images in batches of ``--max-batch``, measured
  before and after the server runs (their mean is the reference).
- Server: ``translate serve`` in its own process on 127.0.0.1 (``--max-batch``, ``--max-wait-ms``);
  for each number of concurrent clients (threads, one HTTP connection each), a warm-up round, then
  ``--requests`` requests in all: requests/s, latency percentiles, and the mean batch size from the
  server's /metrics over the measured window.
- Browser: the ``translate web`` folder on a local static server, opened in headless Chromium;
  one image translated ``--browser-runs`` times (the first is reported apart: it includes
  WebAssembly warm-up). Python: ``Translator.infer`` on the same image with onnxruntime's CPU
  provider on 1 thread and on every core.

Targets (issue 17): at 16 clients, at least 0.85x the direct throughput; p99 latency under 3x p50
at 4 clients.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "facades_unpaired" / "trainA"


def make_images(n: int, size: int) -> list[bytes]:
    import io

    from PIL import Image

    src = sorted(SHARED.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0) if SHARED.is_dir() else []
    out = []
    for i in range(n):
        if src:
            img = Image.open(src[-(i % len(src) + 1)]).convert("RGB").resize((size, size), Image.BICUBIC)
        else:
            img = Image.fromarray(np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def export_default_generator(dst: Path, size: int) -> Path:
    """The default CycleGAN generator (ResNet-9), untrained, exported as translate export does."""
    from translate.engine.checkpoint import save_checkpoint
    from translate.export import export_generator
    from translate.models import build_model
    from translate.run import Run
    from translate.train import build_config

    run = dst / "untrained-run"
    cfg = build_config({"model": "cyclegan", "size": size, "steps": 1})
    Run(run).write_config(cfg)
    model = build_model(cfg)
    save_checkpoint(run, 0, {k: v.contiguous() for k, v in model.state_dict().items()}, {"step": 0})
    return export_generator(run, out=dst / "resnet9.onnx", quiet=True).path


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def direct_rate(translator, pil_images, batch: int, repeats: int) -> list[float]:
    translator.batch(pil_images[:batch])  # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(0, len(pil_images), batch):
            translator.batch(pil_images[i: i + batch])
        rates.append(len(pil_images) / (time.perf_counter() - t))
    return rates


def start_server(model: Path, max_batch: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    """``translate serve`` in its own process (quiet: no access log) on a free port of 127.0.0.1."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "translate", "-q", "serve", str(model), "--port", str(port),
                             "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("translate serve exited before it was ready")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("translate serve did not start")


def batch_counts(client) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    got = {s.name: s.value for fam in text_string_to_metric_families(client.get("/metrics").text)
           for s in fam.samples if s.name in ("translate_batch_size_sum", "translate_batch_size_count")}
    return got.get("translate_batch_size_sum", 0.0), got.get("translate_batch_size_count", 0.0)


def load(url: str, images: list[bytes], clients: int, requests: int) -> dict:
    """``requests`` requests from ``clients`` threads (one connection each), after a warm-up round."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    counter = {"next": 0}

    def worker(n_total: int, record: bool, errors: list) -> None:
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                with lock:
                    i = counter["next"]
                    if i >= n_total:
                        return
                    counter["next"] += 1
                t = time.perf_counter()
                r = c.post("/v1/translate", content=images[i % len(images)])
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    errors.append(r.text)
                elif record:
                    with lock:
                        latencies.append(dt)

    def round_(n: int, record: bool) -> float:
        counter["next"] = 0
        errors: list = []
        threads = [threading.Thread(target=worker, args=(n, record, errors)) for _ in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if errors:
            raise SystemExit(f"{len(errors)} request(s) failed: {errors[0][:300]}")
        return time.perf_counter() - t

    with httpx.Client(base_url=url, timeout=60) as c:
        round_(clients, record=False)  # warm-up: connections, the batch shapes
        s0, n0 = batch_counts(c)
        wall = round_(requests, record=True)
        s1, n1 = batch_counts(c)
    return {"clients": clients, "requests": requests, "seconds": wall, "req_s": requests / wall,
            "p50_ms": pct(latencies, 50) * 1e3, "p95_ms": pct(latencies, 95) * 1e3, "p99_ms": pct(latencies, 99) * 1e3,
            "mean_batch": (s1 - s0) / max(n1 - n0, 1), "batches": n1 - n0}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def browser_time(model: Path, image: bytes, runs: int, tmp: Path) -> dict | None:
    sys.path.insert(0, str(ROOT / "tests"))
    from cdp import Chromium, chromium_path

    from translate.serve.web import local_ort_web, write_site

    dist = local_ort_web(ROOT / "build", install=True)
    if chromium_path() is None or dist is None:
        print("browser: skipped (needs Chromium and onnxruntime-web from npm: make web-deps)", flush=True)
        return None
    site = write_site(model, tmp / "site", ort_web=dist).out
    (tmp / "one.jpg").write_bytes(image)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: _Quiet(*a, directory=str(site), **k))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    infer, total = [], []
    try:
        with Chromium(timeout=600) as browser:
            page = browser.new_page(f"http://127.0.0.1:{httpd.server_address[1]}/")
            page.wait_for("document.body.dataset.model", timeout=300)
            assert page.eval("document.body.dataset.model") == "ready", page.console()
            threads = page.eval("ort.env.wasm.numThreads || 1")
            for _ in range(runs):
                page.eval("document.getElementById('file').value = ''; document.body.dataset.state = 'idle'")
                page.set_files("#file", [tmp / "one.jpg"])
                state = page.wait_for("['done', 'error'].includes(document.body.dataset.state) && "
                                      "document.body.dataset.state", timeout=600)
                assert state == "done", page.eval("document.getElementById('status').textContent")
                infer.append(float(page.eval("document.body.dataset.ms")))
                total.append(float(page.eval("document.body.dataset.totalMs")))
                print(f"browser: {infer[-1]:.0f} ms (page total {total[-1]:.0f} ms)", flush=True)
            version = page.eval("navigator.userAgent")
    finally:
        httpd.shutdown()
        httpd.server_close()
    return {"wasm_threads": threads, "infer_ms": infer, "total_ms": total, "user_agent": version,
            "first_ms": infer[0], "median_ms": statistics.median(infer[1:] or infer)}


def python_time(model: Path, image: bytes, repeats: int) -> dict:
    import io

    from PIL import Image

    from translate.images import to_float
    from translate.runtime import Translator

    x = to_float(np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))[None]
    out = {}
    for threads in (1, None):
        t = Translator(model, provider="cpu", threads=threads, tile=0)
        t.infer(x)
        times = []
        for _ in range(repeats):
            s = time.perf_counter()
            t.infer(x)
            times.append((time.perf_counter() - s) * 1e3)
        out["1 thread" if threads == 1 else "all cores"] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="an .onnx file [the untrained default ResNet-9]")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16, help="distinct images, sent round-robin")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=48, help="measured requests per number of clients")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--direct-repeats", type=int, default=1, help="passes over the images, before and after")
    ap.add_argument("--browser-runs", type=int, default=3, help="0: no browser measurement")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import io

    from PIL import Image

    from translate.runtime import Translator, cpu_count

    tmp = Path(tempfile.mkdtemp(prefix="serve-speed-"))
    proc = None
    try:
        model = args.model or export_default_generator(tmp, args.size)
        images = make_images(args.images, args.size)
        pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
        pil = (pil * (-(-args.requests // len(pil))))[: max(args.requests, len(pil))]
        t = Translator(model, batch_size=args.max_batch, tile=0)
        print(f"model {model.name} ({t.metadata.get('family')} {t.metadata.get('generator')}, "
              f"{model.stat().st_size / 1e6:.0f} MB) | {args.size} px | {cpu_count()} cores | max batch "
              f"{args.max_batch}, max wait {args.max_wait_ms:g} ms", flush=True)
        before = direct_rate(t, pil, args.max_batch, args.direct_repeats)
        print(f"Translator.batch before: {statistics.median(before):.3f} img/s", flush=True)
        del t  # one onnxruntime session at a time on these cores

        proc, url = start_server(model, args.max_batch, args.max_wait_ms)
        levels = []
        for c in args.clients:
            r = load(url, images, c, max(args.requests, c))
            levels.append(r)
            print(f"{c:>2} clients: {r['req_s']:.3f} req/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms, mean batch {r['mean_batch']:.2f}", flush=True)
        proc.terminate()
        proc.wait(60)
        proc = None

        t = Translator(model, batch_size=args.max_batch, tile=0)
        after = direct_rate(t, pil, args.max_batch, args.direct_repeats)
        print(f"Translator.batch after: {statistics.median(after):.3f} img/s", flush=True)
        del t
        direct = (statistics.median(before) + statistics.median(after)) / 2

        browser = browser_time(model, images[0], args.browser_runs, tmp) if args.browser_runs else None
        python = python_time(model, images[0], 5)
        print(f"onnxruntime Python CPU, one image: {python['1 thread']:.0f} ms on 1 thread, "
              f"{python['all cores']:.0f} ms on {cpu_count()} cores", flush=True)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n| clients | requests | req/s | vs Translator.batch ({direct:.3f} img/s) | p50 ms | p95 ms | p99 ms "
          f"| p99 / p50 | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in levels:
        r["vs_direct"] = r["req_s"] / direct
        print(f"| {r['clients']} | {r['requests']} | {r['req_s']:.3f} | {r['vs_direct']:.2f}x | {r['p50_ms']:.0f} | "
              f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['p99_ms'] / r['p50_ms']:.2f} | {r['mean_batch']:.2f} |")
    by = {r["clients"]: r for r in levels}
    targets = {}
    if 16 in by:
        targets["16_clients_vs_direct>=0.85"] = {"value": by[16]["vs_direct"], "met": by[16]["vs_direct"] >= 0.85}
    if 4 in by:
        ratio = by[4]["p99_ms"] / by[4]["p50_ms"]
        targets["4_clients_p99/p50<3"] = {"value": ratio, "met": ratio < 3}
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.2f} -> {'met' if v['met'] else 'MISSED'}")
    if browser:
        print(f"\none {args.size} px image: in Chromium (WebAssembly, {browser['wasm_threads']} thread(s)) "
              f"{browser['median_ms']:.0f} ms (median of runs 2-{len(browser['infer_ms'])}; the first "
              f"{browser['first_ms']:.0f} ms); onnxruntime Python CPU {python['1 thread']:.0f} ms on 1 thread "
              f"({browser['median_ms'] / python['1 thread']:.2f}x), {python['all cores']:.0f} ms on all cores")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": cpu_count()},
            "args": {k: str(v) for k, v in vars(args).items()},
            "direct_img_s": {"before": before, "after": after, "reference": direct},
            "server": levels, "targets": targets, "browser": browser, "python_one_image_ms": python}, indent=2))


if __name__ == "__main__":
    main()
