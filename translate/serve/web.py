"""``translate web``: a static folder that translates images inside the visitor's browser.

It holds ``index.html`` (the same page as the server's, in its "web" mode), the model as
``model.onnx`` and onnxruntime-web's WebAssembly build: ``ort.wasm.min.js``,
``ort-wasm-simd-threaded.mjs`` and ``.wasm``, copied from the npm package ``onnxruntime-web`` at the
pinned version (installed once with npm into the cache, or taken from ``--ort-web DIR``). The page
pre- and post-processes exactly as ``runtime.Translator`` does (normalisation, reflect padding to
the size multiple, tiles past ``TILE`` pixels a side, the ``noise_seed`` input).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..fileio import atomic_path, atomic_write_text, cache_dir
from ..runtime import create_session, model_info
from .page import page_html

log = logging.getLogger("translate.serve")

ORT_WEB_VERSION = "1.31.1"  # the onnxruntime-web release the page is written and tested against
ORT_WEB_ENV = "TRANSLATE_ORT_WEB"  # a dist/ folder to use instead of the cache
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
TILE = 512  # the browser's tile side: WebAssembly memory is smaller than a server's
SITE_FILES = ("index.html", "model.onnx", *ORT_FILES)  # (the runtime's files carry its MIT licence notice)


@dataclass
class Site:
    out: Path
    model_mb: float
    ort_version: str


def ort_web_cache() -> Path:
    """Where ``npm install onnxruntime-web@VERSION`` goes: ``$TRANSLATE_CACHE/onnxruntime-web-VERSION``."""
    return cache_dir() / f"onnxruntime-web-{ORT_WEB_VERSION}"


def dist_version(dist: Path) -> str | None:
    try:
        return json.loads((dist.parent / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def has_ort_files(dist: Path) -> bool:
    return all((dist / f).is_file() for f in ORT_FILES)


def npm_install(prefix: Path, timeout: float = 600) -> Path:
    """``npm install onnxruntime-web@ORT_WEB_VERSION`` into ``prefix`` (a temporary folder renamed
    into place, so an interrupted install leaves nothing half-done). Returns the dist/ folder."""
    dist = prefix / "node_modules" / "onnxruntime-web" / "dist"
    if has_ort_files(dist):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError(f"translate web needs onnxruntime-web {ORT_WEB_VERSION} from npm, and npm is not installed: "
                          f"install Node.js and npm (e.g. apt-get install npm), or run 'npm install "
                          f"onnxruntime-web@{ORT_WEB_VERSION}' elsewhere and pass --ort-web "
                          f"node_modules/onnxruntime-web/dist")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix.name}.", dir=prefix.parent))
    log.info("installing onnxruntime-web %s with npm into %s (once)", ORT_WEB_VERSION, prefix)
    try:
        (tmp / "package.json").write_text('{"private": true}\n')
        try:
            done = subprocess.run([npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--ignore-scripts",
                                   "--loglevel", "error", f"onnxruntime-web@{ORT_WEB_VERSION}"],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"npm install onnxruntime-web@{ORT_WEB_VERSION} took over {timeout:.0f} s; check the "
                              f"access to the npm registry, or pass --ort-web DIR") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            why = lines[0][:200] if lines else f"exit code {done.returncode}"
            raise ConfigError(f"npm install onnxruntime-web@{ORT_WEB_VERSION} failed ({why}); check the access to the "
                              f"npm registry, or pass --ort-web DIR")
        if not has_ort_files(tmp / "node_modules" / "onnxruntime-web" / "dist"):
            raise ConfigError(f"onnxruntime-web {ORT_WEB_VERSION} from npm lacks {', '.join(ORT_FILES)}; pass "
                              f"--ort-web DIR")
        if not prefix.exists():
            try:
                os.replace(tmp, prefix)
            except OSError:
                pass  # another process installed it meanwhile
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not has_ort_files(dist):
        raise ConfigError(f"{prefix} holds no complete onnxruntime-web; remove it and try again")
    return dist


def find_ort_web(ort_web: Path | None = None, *, install: bool = True) -> Path:
    """onnxruntime-web's dist/ folder: ``ort_web``, else ``$TRANSLATE_ORT_WEB``, else the cache
    (installed there with npm when missing and ``install``)."""
    given = ort_web or (Path(os.environ[ORT_WEB_ENV]) if os.environ.get(ORT_WEB_ENV) else None)
    if given is not None:
        for dist in (given, given / "dist", given / "node_modules" / "onnxruntime-web" / "dist"):
            if has_ort_files(dist):
                version = dist_version(dist)
                if version != ORT_WEB_VERSION:
                    log.warning("onnxruntime-web in %s is %s, not the %s this page is tested with", dist,
                                version or "of unknown version", ORT_WEB_VERSION)
                return dist
        raise ConfigError(f"{given} holds no onnxruntime-web build ({', '.join(ORT_FILES)}); give its dist/ folder "
                          f"(node_modules/onnxruntime-web/dist after 'npm install onnxruntime-web@{ORT_WEB_VERSION}')")
    dist = ort_web_cache() / "node_modules" / "onnxruntime-web" / "dist"
    if has_ort_files(dist):
        return dist
    if not install:
        raise ConfigError(f"onnxruntime-web {ORT_WEB_VERSION} is not in {ort_web_cache()}")
    return npm_install(ort_web_cache())


def local_ort_web(root: Path = Path("build"), *, install: bool = False, timeout: float = 600) -> Path | None:
    """A project checkout's own copy (``build/onnxruntime-web-VERSION``, what ``make web-deps``
    installs and the browser tests and benchmarks use): its dist/ folder, or None when it is missing
    (and cannot be installed: no npm, no registry)."""
    prefix = Path(root) / f"onnxruntime-web-{ORT_WEB_VERSION}"
    dist = prefix / "node_modules" / "onnxruntime-web" / "dist"
    if has_ort_files(dist):
        return dist
    if not install:
        return None
    try:
        return npm_install(prefix, timeout=timeout)
    except ConfigError as exc:
        log.warning("%s", exc)
        return None


def write_site(model: Path, out: Path, *, ort_web: Path | None = None, overwrite: bool = False) -> Site:
    """Write the static folder ``out`` for ``model`` (see the module docs)."""
    model = Path(model)
    session, _ = create_session(model, "cpu")  # a missing or broken model fails here, with its name
    info = model_info(session)
    meta = info.meta or {}
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; give a folder for the site")
    clash = [f for f in SITE_FILES if (out / f).exists()]
    if clash and not overwrite:
        raise ConfigError(f"{out} already holds {', '.join(clash)}; choose another folder or pass --overwrite")
    if meta.get("precision") == "fp16":
        log.warning("%s is an fp16 export: WebAssembly computes it in fp32 after conversions, more slowly; "
                    "export without --fp16 for the web", model)
    dist = find_ort_web(ort_web)
    version = dist_version(dist) or "unknown"
    out.mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        _copy(dist / name, out / name)
    _copy(model, out / "model.onnx")
    config = {
        "mode": "web", "model": "model.onnx", "ort": ORT_FILES[0], "ort_version": version, "tile": TILE,
        "meta": {"name": model.name, "family": meta.get("family"), "generator": meta.get("generator"),
                 "direction": meta.get("direction"), "train_size": meta.get("train_size"),
                 "precision": meta.get("precision", "fp32"), "noise": info.noise, "size_multiple": info.size_multiple,
                 "min_side": info.min_side},
    }
    atomic_write_text(out / "index.html", page_html(config))  # last: the page appears once its files are there
    return Site(out, model.stat().st_size / 1e6, version)


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
