"""Downloads users can trust: streamed, resumable, retried, checksummed, safely extracted.

``fetch`` brings one remote file to a local path: it streams into ``<file>.part`` with a progress
bar, resumes a partial file with an HTTP ``Range`` request, retries dropped or failed connections
with exponential backoff, and checks the size and sha256 before renaming the file into place. A
file whose sha256 is not published is checked against the digest its first download recorded.

``extract`` unpacks a zip or tar archive into a temporary folder beside the target and renames it
into place only when complete. It refuses members that would land outside the target (absolute
paths, ``..``), links and device files, and archives that unpack to more than a limit (counted from
the bytes actually written, not from the archive's own claims), and it checks free disk space
first. It also records every file's size and sha256 in a manifest that ``verify`` checks later.

Nothing here knows a data set by name; ``pairs.py`` holds the registry.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import ssl
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from .. import __version__
from ..errors import DataError
from ..fileio import atomic_write_text, fsync_dir

log = logging.getLogger("translate.data")

CHUNK = 1 << 20
MANIFEST = ".translate-manifest.json"
USER_AGENT = f"translate/{__version__} (+https://pypi.org/project/translate)"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set as published: where it lives and what it must be."""

    url: str
    filename: str
    size: int | None = None  # bytes; None where not published
    sha256: str | None = None  # None: the first download records it (see ChecksumStore)
    alternates: tuple[str, ...] = ()  # other official hosts, tried in order when the first fails


class NoSpaceError(DataError):
    """Not enough free disk space for the work asked for."""


class UnavailableError(DataError):
    """The server answered that the file is not there (HTTP 4xx)."""


class OfflineError(DataError):
    """The server could not be reached at all (no route, DNS failure, refused, timed out)."""


class ChecksumStore:
    """Digests recorded by first downloads of files whose sha256 is not published.

    Kept in ``<root>/checksums.json``; later downloads (and ``--from-archive`` files) are checked
    against it, so a changed or corrupted file on the server is noticed.
    """

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / "checksums.json"

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{self.path} is damaged; delete it (the digests are recorded again on the "
                            f"next download)") from None
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict | None:
        return self._read().get(key)

    def record(self, key: str, size: int, sha256: str) -> None:
        data = self._read()
        data[key] = {"size": size, "sha256": sha256}
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- hashing ------------------------------------------------------------------------------------
def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def _bar(total: int | None, desc: str, quiet: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=quiet, leave=False, dynamic_ncols=True)


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start work that would fill the disk (with 5 % + 64 MiB to spare)."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    margin = needed // 20 + (64 << 20)
    if needed + margin > free:
        raise NoSpaceError(f"not enough disk space in {folder} for {what}: needs {human_size(needed + margin)}, "
                        f"{human_size(free)} free; free some space or choose another --root")


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"



# --- download -----------------------------------------------------------------------------------
def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)


def expected_digest(rf: RemoteFile, key: str, store: ChecksumStore | None) -> tuple[str | None, str]:
    """The sha256 a file must have, and where that comes from ("published" or the store's path)."""
    if rf.sha256:
        return rf.sha256, "published"
    rec = (store.get(key) or {}).get("sha256") if store else None
    return (rec, f"recorded by its first download in {store.path}") if rec else (None, "")


def mismatch(rf: RemoteFile, size: int, got_sha: str, key: str,
             store: ChecksumStore | None) -> tuple[str, bool] | None:
    """How a file differs from the published size or the published / recorded sha256, and whether
    the digest it fails is a recorded one; None when it is the expected file."""
    if rf.size is not None and size != rf.size:
        return f"has {size} bytes, expected {rf.size}", False
    expected, origin = expected_digest(rf, key, store)
    if expected is not None and got_sha != expected:
        return f"is corrupt: expected sha256 {expected} ({origin}), got {got_sha}", origin != "published"
    return None


def _verify(path: Path, got_sha: str, rf: RemoteFile, key: str, store: ChecksumStore | None, url: str, *,
            placed: bool = False, skip_checksum: bool = False) -> None:
    """Compare a complete file with the published or recorded size and sha256; remove it on a
    mismatch. Recording a digest is the caller's job, once the file has proved good (unpacked)."""
    found = mismatch(rf, path.stat().st_size, got_sha, key, store)
    if found is None:
        return
    problem, recorded = found
    what = f"{path} (already there, put by hand or by an earlier run)" if placed else f"{rf.filename} from {url}"
    if skip_checksum:
        log.warning("%s %s; used anyway (--skip-checksum)", what, problem)
        return
    path.unlink()
    again = (f"fetch {rf.url} again" if placed else "run the command again to download it afresh (if this "
             "repeats, the server or mirror serves another file)")
    hint = ("if the publisher changed the file, delete its entry there" if recorded else
            "if the publisher repacked the archive, --skip-checksum accepts it")
    raise DataError(f"{what} {problem}; removed it: {again}; {hint}")


class _LocalError(Exception):
    """Writing the local file failed (disk full, permissions): reported as is, never retried."""


class _Partial:
    """The ``.part`` file being written, with the sha256 of what it holds so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.have = path.stat().st_size if path.exists() else 0
        self.hasher = hashlib.sha256()
        if self.have:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    self.hasher.update(chunk)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.have, self.hasher = 0, hashlib.sha256()


def fetch(rf: RemoteFile, dest: Path, *, mirror: str | None = None, urls: list[str] | None = None,
          store: ChecksumStore | None = None, key: str | None = None, timeout: float = 30.0, retries: int = 4,
          backoff: float = 1.0, skip_checksum: bool = False, quiet: bool = False) -> tuple[Path, str]:
    """Download ``rf`` to ``dest`` (verified), resuming ``dest.part`` if a previous attempt left one.
    Returns the path and its sha256.

    The URLs tried, in order: ``urls`` if given, else ``<mirror>/<filename>`` with a mirror, else the
    official URL and its alternates. ``retries`` counts consecutive attempts that made no progress;
    an attempt that received bytes resets the count. A file already at ``dest`` (an earlier
    download, or one put there by hand) is verified and used; a wrong one is removed and fetched.
    """
    key = key or rf.filename
    urls = urls or ([f"{mirror.rstrip('/')}/{rf.filename}"] if mirror else [rf.url, *rf.alternates])
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        digest = sha256_file(dest)
        try:
            _verify(dest, digest, rf, key, store, urls[0], placed=True, skip_checksum=skip_checksum)
            return dest, digest
        except DataError as exc:
            log.warning("%s; downloading it", str(exc).split(": fetch")[0])
    first_error: DataError | None = None
    for i, url in enumerate(urls):
        try:
            return _fetch_url(url, rf, dest, store=store, key=key, timeout=timeout, retries=retries,
                              backoff=backoff, quiet=quiet, mirror=mirror, skip_checksum=skip_checksum)
        except (OfflineError, UnavailableError) as exc:
            first_error = first_error or exc
            if i + 1 < len(urls):
                log.info("%s; trying %s", str(exc).split(". On a machine")[0], urls[i + 1])
    assert first_error is not None
    raise first_error


def _fetch_url(url: str, rf: RemoteFile, dest: Path, *, store: ChecksumStore | None, key: str, timeout: float,
               retries: int, backoff: float, quiet: bool, mirror: str | None, skip_checksum: bool) -> tuple[Path, str]:
    part = _Partial(dest.with_name(dest.name + ".part"))
    if rf.size is not None and part.have > rf.size:
        part.restart()
    check_free_space(dest.parent, (rf.size or 0) - part.have, rf.filename)
    if part.have:
        log.info("resuming %s at %s", rf.filename, human_size(part.have))

    failures, last_error = 0, ""
    with _bar(rf.size, rf.filename, quiet, initial=part.have) as bar:
        while not (rf.size is not None and part.have == rf.size):
            before = part.have
            try:
                if _transfer(url, part, timeout, bar, rf.size):
                    break
                last_error = "the connection closed before the end of the file"
            except _LocalError as exc:
                raise exc.args[0] from None
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and part.have:  # nothing past our offset
                    total = (exc.headers or {}).get("Content-Range", "").rpartition("/")[2]
                    if total.isdigit() and int(total) == part.have and rf.size is None:
                        break  # the partial file was already complete
                    part.restart()
                    bar.reset(total=rf.size)
                    last_error = "the server refused the resume offset"
                elif exc.code in (408, 425, 429) or exc.code >= 500:
                    last_error = f"HTTP {exc.code} {exc.reason}"
                else:
                    raise UnavailableError(f"{url} answered HTTP {exc.code} {exc.reason}; check the URL"
                                    f"{' and the mirror' if mirror else ''}, or fetch the file elsewhere and pass "
                                    f"it with --from-archive") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # DNS, refused, reset, ...
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise DataError(f"the TLS certificate of {url} could not be verified ({reason.verify_message}); "
                                    f"check the machine's clock and CA certificates, or use --mirror") from None
                last_error = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
            failures = 0 if part.have > before else failures + 1
            if failures >= retries:
                raise OfflineError(f"could not download {url} ({last_error}; {retries} attempts): no network, "
                                   f"or the server is down. On a machine with internet, download that URL and put "
                                   f"the file at {dest} (or pass it with --from-archive FILE), then run the command "
                                   f"again") from None
            wait = backoff * 2 ** (failures - 1) if failures else 0.0
            log.info("download of %s interrupted (%s); %s", rf.filename, last_error,
                     f"retrying in {wait:.0f} s" if wait else "resuming")
            time.sleep(wait)
    os.replace(part.path, dest)
    fsync_dir(dest.parent)
    digest = part.hasher.hexdigest()
    _verify(dest, digest, rf, key, store, url, skip_checksum=skip_checksum)
    return dest, digest


def _transfer(url: str, part: _Partial, timeout: float, bar, size: int | None) -> bool:
    """One HTTP request appending to the partial file. Returns whether the file is complete."""
    with _open(url, part.have, timeout) as resp:
        status = getattr(resp, "status", 200)
        first = resp.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
        if part.have and (status != 206 or not first.isdigit() or int(first) != part.have):
            # Range ignored (the whole file comes again), or a range that is not ours
            log.info("%s did not resume at byte %d; downloading from the start", url, part.have)
            part.restart()
            bar.reset(total=size)
            if status == 206:
                return False  # drop this answer; the next attempt asks from byte 0
        length = resp.headers.get("Content-Length")
        end = part.have + int(length) if length and length.isdigit() else size
        try:
            f = open(part.path, "ab")
        except OSError as exc:
            raise _LocalError(exc) from None
        with f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, ValueError, http.client.HTTPException):  # reset, timeout, IncompleteRead
                    return False
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:  # disk full, permissions: not worth a retry
                    raise _LocalError(exc) from None
                part.hasher.update(chunk)
                part.have += len(chunk)
                bar.update(len(chunk))
    return end is None or part.have >= end


# --- extraction ---------------------------------------------------------------------------------
@dataclass
class _Member:
    name: str  # path inside the archive, posix
    size: int
    is_dir: bool
    open: Callable[[], IO[bytes]] | None


def _safe_parts(name: str, archive: Path) -> tuple[str, ...]:
    p = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or p.is_absolute():
        raise DataError(f"{archive} holds a member with an absolute path ({name}); refusing to extract it. "
                        f"The archive is not a genuine data set archive; delete it")
    parts = tuple(x for x in p.parts if x not in ("", "."))
    if ".." in parts:
        raise DataError(f"{archive} holds a member that escapes the target folder ({name}); refusing to extract "
                        f"it. The archive is not a genuine data set archive; delete it")
    return parts


def _members(archive: Path, fmt: str, stack, dest: Path) -> Iterator[_Member]:
    if fmt == "zip":
        zf = stack(zipfile.ZipFile(archive))
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise DataError(f"{archive} holds a link ({info.filename}); refusing to extract it. The archive "
                                f"is not a genuine data set archive; delete it")
            is_dir = info.is_dir() or info.filename.endswith("\\")  # folders zipped on Windows
            yield _Member(info.filename, info.file_size, is_dir, None if is_dir else (lambda i=info: zf.open(i)))
    elif fmt in ("tar", "tar.gz", "tgz", "tar.bz2", "tar.xz"):
        tf = stack(tarfile.open(archive, "r:*"))
        data_filter = getattr(tarfile, "data_filter", None)  # Python 3.10.12+ / 3.11.4+
        for info in tf:
            if data_filter is not None:  # the standard library's own checks first (PEP 706), then ours
                try:  # (it strips a leading "/" where ours refuses the member: ours read the name as stored)
                    data_filter(info, str(dest))
                except tarfile.FilterError as exc:
                    raise DataError(f"{archive}: {exc} (tarfile's data filter); refusing to extract it. The "
                                    f"archive is not a genuine data set archive; delete it") from None
            if info.issym() or info.islnk():
                raise DataError(f"{archive} holds a link ({info.name} -> {info.linkname}); refusing to extract "
                                f"it. The archive is not a genuine data set archive; delete it")
            if not (info.isfile() or info.isdir()):
                raise DataError(f"{archive} holds a device or special file ({info.name}); refusing to extract "
                                f"it. The archive is not a genuine data set archive; delete it")
            yield _Member(info.name, info.size, info.isdir(),
                          None if info.isdir() else (lambda i=info: tf.extractfile(i)))
    else:
        raise ValueError(f"unknown archive format {fmt!r}")


def archive_format(path: Path) -> str:
    name = path.name.lower()
    for fmt in ("tar.gz", "tar.bz2", "tar.xz", "tgz", "tar", "zip"):
        if name.endswith("." + fmt):
            return fmt
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DataError(f"{path} is neither a zip nor a tar archive; give the data set's archive as published")


def extract(archive: Path, target: Path, *, root_in_archive: str | None = None, max_bytes: int | None = None,
            fmt: str | None = None, name: str | None = None, quiet: bool = False) -> dict[str, list]:
    """Unpack ``archive`` so that ``target`` appears complete or not at all.

    ``root_in_archive``: the archive's top folder (``horse2zebra/``); its contents become
    ``target``'s and anything outside it is left out. Returns the manifest written into ``target``:
    ``{relative path: [size, sha256]}``. ``target`` must not exist yet.
    """
    import contextlib

    fmt = fmt or archive_format(archive)
    if target.exists():
        raise DataError(f"{target} already exists; move it away (or delete it) before extracting into it")
    prefix = _safe_parts(root_in_archive, archive) if root_in_archive else ()
    try:
        with contextlib.ExitStack() as stack:
            # Pass 1: every member is checked before anything is written.
            listed, total = [], 0
            for m in _members(archive, fmt, stack.enter_context, target):
                parts = _safe_parts(m.name, archive)
                if not parts or parts[:len(prefix)] != prefix:
                    continue
                listed.append((parts[len(prefix):], m))
                total += 0 if m.is_dir else m.size
            if not listed:
                where = f" under {root_in_archive}/" if root_in_archive else ""
                raise DataError(f"{archive} holds no files{where}; it is not the expected data set archive")
            if max_bytes is not None and total > max_bytes:
                raise DataError(f"{archive} unpacks to {human_size(total)}, more than the {human_size(max_bytes)} "
                                f"allowed for it; refusing to extract (a damaged or malicious archive)")
            check_free_space(target.parent, total, f"unpacking {archive.name}")
            # Pass 2: write into a temp folder beside the target, counting what is really written.
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
            try:
                manifest = _write_members(listed, tmp, archive, max_bytes, total, quiet)
                atomic_write_text(tmp / MANIFEST, json.dumps({"name": name, "archive": archive.name,
                                                              "files": manifest}, indent=0, sort_keys=True) + "\n")
                os.replace(tmp, target)
                fsync_dir(target.parent)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # a real I/O error: disk full, permissions
            raise
        raise DataError(f"{archive} is damaged ({type(exc).__name__}: {exc}); delete it and download it "
                        f"again") from None
    return manifest


def _write_members(listed, tmp: Path, archive: Path, max_bytes: int | None, total: int,
                   quiet: bool) -> dict[str, list]:
    manifest: dict[str, list] = {}
    written = 0
    with _bar(total, f"unpacking {archive.name}", quiet) as bar:
        for parts, m in listed:
            if not parts:
                continue
            out = tmp.joinpath(*parts)
            if m.is_dir:
                out.mkdir(parents=True, exist_ok=True)
                continue
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                dst_file = open(out, "xb")  # noqa: SIM115 - closed below
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                raise DataError(f"{archive} holds {m.name} twice, or as both a file and a folder; it is damaged, "
                                f"delete it and download it again") from None
            h = hashlib.sha256()
            size = 0
            with m.open() as src, dst_file as dst:
                while chunk := src.read(CHUNK):
                    size += len(chunk)
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise DataError(f"{archive} unpacks to more than the {human_size(max_bytes)} allowed for it "
                                        f"(its headers understate the sizes); refusing to extract it")
                    dst.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            manifest["/".join(parts)] = [size, h.hexdigest()]
    return manifest


def place_files(files: list[Path], target: Path, name: str | None = None) -> dict[str, list]:
    """Data sets published as loose files (MNIST): move them into ``target`` the same atomic way."""
    if target.exists():
        raise DataError(f"{target} already exists; move it away (or delete it) first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        manifest = {}
        for f in files:
            shutil.copy2(f, tmp / f.name)
            manifest[f.name] = [f.stat().st_size, sha256_file(tmp / f.name)]
        atomic_write_text(tmp / MANIFEST, json.dumps({"name": name, "archive": None, "files": manifest}, indent=0,
                                                     sort_keys=True) + "\n")
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_manifest(folder: Path, *, deep: bool = True, quiet: bool = False) -> list[str]:
    """Problems with ``folder`` against the manifest its extraction wrote: missing files, wrong sizes,
    and (``deep``) wrong contents. An empty list means the folder is as it was unpacked."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
        files: dict[str, list] = data["files"]
        assert all(len(v) == 2 for v in files.values())
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AssertionError):
        raise DataError(f"{path} is damaged, so {folder} cannot be checked; delete the folder and download the "
                        f"data set again") from None
    problems = []
    total = sum(size for size, _ in files.values()) if deep else None
    with _bar(total, f"verifying {folder.name}", quiet or not deep) as bar:
        for rel, (size, digest) in sorted(files.items()):
            p = folder / rel
            if not p.is_file():
                problems.append(f"{rel} is missing")
            elif p.stat().st_size != size:
                problems.append(f"{rel} has {p.stat().st_size} bytes, expected {size}")
            elif deep and sha256_file(p, bar.update) != digest:
                problems.append(f"{rel} is corrupt (sha256 differs from the unpacked archive's)")
    return problems
