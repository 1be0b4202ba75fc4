"""The one HTML page (``page.html``, shipped in the package): the server's ``/`` and ``translate
web``'s ``index.html``. Everything it needs is inside it (no CDN, no external request)."""
from __future__ import annotations

import json
from importlib import resources
from typing import Any


def page_html(config: dict[str, Any]) -> str:
    """The page with its configuration: ``{"mode": "server"}`` (it posts to /v1/translate) or
    ``{"mode": "web", ...}`` (it runs the model with onnxruntime-web)."""
    html = resources.files("translate.serve").joinpath("page.html").read_text(encoding="utf-8")
    marker = "/*CONFIG*/{}"
    if marker not in html:
        raise RuntimeError("page.html lost its configuration marker")
    return html.replace(marker, json.dumps(config).replace("</", "<\\/"), 1)
