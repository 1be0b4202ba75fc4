"""Finding the images of a folder: every image file under it, header-checked, bad ones reported."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ..errors import DataError
from ..images import IMAGE_EXTENSIONS, MODE_NOTES, is_image_file, probe

log = logging.getLogger("translate.data")


def scan_images(folder: Path, *, min_side: int = 0, max_bad_fraction: float = 0.1,
                bad_out: list[Path] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), header-checked.

    Unreadable files are skipped with a warning naming each; more than ``max_bad_fraction`` of them
    is an error. Images needing conversion or smaller than ``min_side`` get one note per kind.
    """
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a folder; check the --data path")
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not candidates:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS)[:6])
        raise DataError(f"{folder} holds no images (looked for {exts}, ...); put the training images there")
    good, bad = [], []
    modes: Counter[str] = Counter()
    small = 0
    for path in candidates:
        try:
            w, h, mode = probe(path)
        except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
            bad.append(path)
            log.warning("skipping %s: not a readable image (%s)", path, type(exc).__name__)
            continue
        good.append(path)
        if mode != "RGB":
            modes[mode] += 1
        if min(w, h) < min_side:
            small += 1
    if bad_out is not None:
        bad_out.extend(bad)
    if bad and len(bad) > max_bad_fraction * len(candidates):
        raise DataError(f"{len(bad)} of {len(candidates)} images in {folder} are unreadable (e.g. {bad[0].name}); "
                        f"remove or re-encode them (the limit is {max_bad_fraction:.0%}, max_bad_fraction)")
    for mode, n in modes.items():
        log.info("note: %d %s image(s) in %s will be converted to RGB", n, MODE_NOTES.get(mode, mode), folder)
    if small:
        log.info("note: %d image(s) in %s are smaller than %d px and will be upscaled", small, folder, min_side)
    return good
