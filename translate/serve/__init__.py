"""Serving an exported generator: ``translate serve`` (an HTTP API with dynamic batching and a page,
FastAPI on uvicorn) and ``translate web`` (a static folder that translates inside the browser with
onnxruntime-web). Neither imports torch.

```python
from translate import Translator
from translate.serve import Settings, create_app
app = create_app(Translator("export/h2z.onnx"), Settings(max_batch=8, max_wait_ms=10))   # any ASGI server
```

This module imports nothing heavy: the web export needs neither FastAPI nor uvicorn, and the
``serve`` extra's packages are checked with :func:`require` so a missing one is named.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import ConfigError

__all__ = ["Settings", "create_app", "require", "run_server"]

# module name -> the PyPI package that provides it (all in the `serve` extra)
SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
                 "prometheus_client": "prometheus-client"}


def require() -> None:
    """Raise a one-line ``ConfigError`` naming what to install when the serve extra is missing."""
    missing = []
    for module, package in SERVE_MODULES.items():
        try:
            import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigError(f"translate serve needs {', '.join(missing)}: pip install 'translate[serve]'")


def __getattr__(name: str):
    if name in ("Settings", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "run_server":
        from .server import run_server

        return run_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
