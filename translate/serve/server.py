"""Running the app on uvicorn: bind, warn when exposed without a key, stop gracefully.

SIGTERM or Ctrl-C stops accepting connections, lets the requests in flight finish (up to
``GRACE_S``), drains the batcher, then returns; a second Ctrl-C stops at once.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import socket

from ..errors import ConfigError
from ..runtime import Translator
from .app import Settings, create_app

log = logging.getLogger("translate.serve")

GRACE_S = 30  # how long requests in flight may take to finish after SIGTERM / Ctrl-C


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), or a one-line ConfigError."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}; give an address such as 127.0.0.1 or 0.0.0.0") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port, or stop what "
                          f"uses it") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def run_server(translator: Translator, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000,
               log_level: str = "info", access_log: bool = True) -> None:
    """Serve until SIGTERM / Ctrl-C; returns after a graceful stop."""
    import uvicorn

    if not is_loopback(host) and not settings.api_key:
        log.warning("warning: listening on %s without an API key: anyone who can reach this port can use the model; "
                    "give --api-key-file FILE (and see docs/deploy.md on reverse proxies)", host)
    app = create_app(translator, settings)
    sock = bind(host, port)
    m = translator.metadata
    what = " ".join(v for v in (m.get("family"), m.get("generator"), m.get("direction")) if v)
    log.info("serving %s (%s, %s) on %s at %s | batches of up to %d within %g ms%s | Ctrl-C to stop",
             translator.path, what or "generator", m.get("precision", "fp32"), translator.provider, url_of(sock),
             settings.max_batch, settings.max_wait_ms, " | API key required" if settings.api_key else "")
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=GRACE_S,
                            server_header=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a SIGTERM that
    # lands on a no-op handler then, and a Ctrl-C caught here, make a stop a normal return.
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if _main_thread() else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
    if server.started:
        log.info("server stopped")
    else:
        raise ConfigError("the server did not start; see the log above")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
