"""Atomic writes: a file appears complete or not at all, never half written."""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once at import: os.umask is process-wide and not thread-safe


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    The temp name keeps the extension (or ``suffix``) so writers that pick a format from the name
    (Pillow, matplotlib) still work. On error the temporary file is removed and ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix or path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:  # mkstemp makes the file owner-only; give it the mode a plain open() would (or the replaced file's)
        os.chmod(tmp_path, (path.stat().st_mode & 0o777) if path.exists() else 0o666 & ~_UMASK)
    except OSError:
        pass
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


CACHE_ENV = "TRANSLATE_CACHE"


def cache_dir() -> Path:
    """Where derived files (the digit classifier, real-image statistics) are cached:
    ``$TRANSLATE_CACHE``, default ``~/.cache/translate``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "translate")


def json_safe(obj):
    """``obj`` with NaN and infinities as None (JSON's null), through dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
