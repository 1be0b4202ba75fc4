"""The download and extraction layer against a local HTTP server (no internet needed)."""
from __future__ import annotations

import hashlib
import io
import logging
import stat
import tarfile
import zipfile

import pytest

from translate.data.download import (MANIFEST, ChecksumStore, OfflineError, RemoteFile, check_manifest, extract,
                                     fetch)
from translate.errors import DataError

from fileserver import FileServer, closed_port_url


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


# --- fetch --------------------------------------------------------------------------------------
def test_good_download_is_verified_and_complete(server, tmp_path):
    data = payload()
    url = server.add("/d/set.zip", data)
    out, digest = fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    assert out.read_bytes() == data and digest == sha(data)
    assert not (tmp_path / "set.zip.part").exists()


def test_resume_after_the_server_drops_the_connection(server, tmp_path):
    data = payload(3 * (1 << 20) + 123)  # several chunks
    url = server.add("/set.zip", data)
    server.behaviour.drop_first["/set.zip"] = len(data) // 2
    fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True, backoff=0)
    assert (tmp_path / "set.zip").read_bytes() == data
    ranges = [r for p, r in server.behaviour.requests if p == "/set.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-", ranges


def test_resume_of_a_part_file_left_by_a_killed_run(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    (tmp_path / "set.zip.part").write_bytes(data[:1000])
    fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    assert (tmp_path / "set.zip").read_bytes() == data
    assert server.behaviour.requests == [("/set.zip", "bytes=1000-")]


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    server.behaviour.ignore_range = True
    (tmp_path / "set.zip.part").write_bytes(data[:1000])
    fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    assert (tmp_path / "set.zip").read_bytes() == data


def test_corrupt_download_is_removed_and_the_error_names_both_digests(server, tmp_path):
    data = payload()
    bad = bytearray(data)
    bad[1234] ^= 0xFF
    url = server.add("/set.zip", bytes(bad))
    with pytest.raises(DataError) as err:
        fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    msg = str(err.value)
    assert sha(data) in msg and sha(bytes(bad)) in msg and "removed" in msg
    assert not list(tmp_path.iterdir())


def test_wrong_size_is_refused(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data[:-10])
    with pytest.raises(DataError, match="bytes, expected"):
        fetch(RemoteFile(url, "set.zip", len(data), None), tmp_path / "set.zip", quiet=True, retries=1)
    assert not list(tmp_path.iterdir())


def test_a_recorded_digest_is_enforced(server, tmp_path):
    """fetch checks against a digest recorded earlier (recording is the caller's, once unpacked)."""
    data = payload()
    url = server.add("/set.zip", data)
    store = ChecksumStore(tmp_path)
    _, digest = fetch(RemoteFile(url, "set.zip"), tmp_path / "dl" / "set.zip", store=store, key="x/set.zip",
                      quiet=True)
    assert digest == sha(data) and store.get("x/set.zip") is None
    store.record("x/set.zip", len(data), digest)
    (tmp_path / "dl" / "set.zip").unlink()
    server.behaviour.files["/set.zip"] = payload(seed=1)  # the server now serves something else
    with pytest.raises(DataError, match="recorded by its first download"):
        fetch(RemoteFile(url, "set.zip"), tmp_path / "dl" / "set.zip", store=store, key="x/set.zip", quiet=True)


def test_mirror_replaces_the_folder_of_the_url(server, tmp_path):
    data = payload()
    server.add("/mirror/sets/set.zip", data)
    rf = RemoteFile("http://official.invalid/datasets/set.zip", "set.zip", len(data), sha(data))
    fetch(rf, tmp_path / "set.zip", mirror=server.url + "/mirror/sets/", quiet=True)
    assert (tmp_path / "set.zip").read_bytes() == data


def test_offline_message_names_the_url_and_where_to_put_the_file(tmp_path):
    url = closed_port_url("/cyclegan/set.zip")
    with pytest.raises(OfflineError) as err:
        fetch(RemoteFile(url, "set.zip", 10), tmp_path / "dl" / "set.zip", retries=2, backoff=0, quiet=True)
    msg = str(err.value)
    assert url in msg and str(tmp_path / "dl" / "set.zip") in msg and "--from-archive" in msg
    assert "\n" not in msg


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(RemoteFile(server.url + "/missing.zip", "missing.zip"), tmp_path / "m.zip", quiet=True, backoff=0)
    assert len(server.behaviour.requests) == 1


def test_server_errors_are_retried_with_backoff(server, tmp_path, monkeypatch):
    data = payload(1000)
    url = server.add("/set.zip", data)
    server.behaviour.fail_status["/set.zip"] = 503
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        if len(sleeps) == 2:  # the server recovers
            del server.behaviour.fail_status["/set.zip"]

    monkeypatch.setattr("translate.data.download.time.sleep", sleep)
    fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True, backoff=1.0)
    assert sleeps == [1.0, 2.0]
    assert (tmp_path / "set.zip").read_bytes() == data


def test_a_file_already_in_place_is_verified_not_downloaded(server, tmp_path):
    data = payload()
    (tmp_path / "set.zip").write_bytes(data)
    fetch(RemoteFile(server.url + "/set.zip", "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    assert server.behaviour.requests == []


def test_disk_space_is_checked_before_downloading(server, tmp_path):
    url = server.add("/huge.zip", b"x")
    with pytest.raises(DataError, match="not enough disk space"):
        fetch(RemoteFile(url, "huge.zip", 1 << 60), tmp_path / "huge.zip", quiet=True)
    assert server.behaviour.requests == []


# --- extract ------------------------------------------------------------------------------------
def test_extract_zip_strips_the_archive_root_and_writes_a_manifest(tmp_path):
    members = {"h2z/trainA/a.jpg": b"aaa", "h2z/trainB/b.jpg": b"bbbb", "__MACOSX/h2z/._a.jpg": b"junk"}
    arc = tmp_path / "h2z.zip"
    arc.write_bytes(make_zip(members))
    manifest = extract(arc, tmp_path / "out" / "horse2zebra", root_in_archive="h2z", quiet=True)
    target = tmp_path / "out" / "horse2zebra"
    assert (target / "trainA" / "a.jpg").read_bytes() == b"aaa"
    assert not (target / "__MACOSX").exists()
    assert manifest == {"trainA/a.jpg": [3, sha(b"aaa")], "trainB/b.jpg": [4, sha(b"bbbb")]}
    assert (target / MANIFEST).is_file()
    assert check_manifest(target, quiet=True) == []
    (target / "trainB" / "b.jpg").write_bytes(b"bbbX")
    (target / "trainA" / "a.jpg").unlink()
    problems = check_manifest(target, quiet=True)
    assert any("trainA/a.jpg is missing" in p for p in problems)
    assert any("trainB/b.jpg is corrupt" in p for p in problems)


def test_extract_tar_gz(tmp_path):
    arc = tmp_path / "facades.tar.gz"
    arc.write_bytes(make_tar({"facades/train/1.jpg": b"1", "facades/val/2.jpg": b"22"}))
    extract(arc, tmp_path / "facades", root_in_archive="facades", quiet=True)
    assert (tmp_path / "facades" / "val" / "2.jpg").read_bytes() == b"22"


@pytest.mark.parametrize("name", ["../evil.txt", "set/../../evil.txt", "/tmp/evil.txt"])
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_path_traversal_is_refused_and_nothing_is_written(tmp_path, name, fmt):
    members = {"set/trainA/a.jpg": b"a", name: b"evil"}
    arc = tmp_path / f"set.{fmt}"
    arc.write_bytes(make_zip(members) if fmt == "zip" else make_tar(members))
    out = tmp_path / "root"
    out.mkdir()
    with pytest.raises(DataError, match="refusing"):
        extract(arc, out / "set", root_in_archive="set", quiet=True)
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_links_are_refused(tmp_path):
    arc = tmp_path / "set.tar.gz"
    arc.write_bytes(make_tar({"set/trainA/a.jpg": b"a"}, links={"set/trainA/passwd": "/etc/passwd"}))
    with pytest.raises(DataError, match="link"):
        extract(arc, tmp_path / "set", root_in_archive="set", quiet=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("set/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    (tmp_path / "z.zip").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="link"):
        extract(tmp_path / "z.zip", tmp_path / "z", quiet=True)
    assert not (tmp_path / "set").exists() and not (tmp_path / "z").exists()


def test_unpacked_size_limit_refuses_a_zip_bomb(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("set/zeros.bin", b"\0" * (20 << 20))
    arc = tmp_path / "bomb.zip"
    arc.write_bytes(buf.getvalue())
    assert arc.stat().st_size < 100_000
    with pytest.raises(DataError, match="unpacks to"):
        extract(arc, tmp_path / "set", root_in_archive="set", max_bytes=1 << 20, quiet=True)
    assert not (tmp_path / "set").exists()


def test_lying_headers_are_caught_while_writing(tmp_path):
    """The limit counts bytes really written: a header that understates a member's size is no way past it."""
    from translate.data import download

    arc = tmp_path / "set.tar.gz"
    arc.write_bytes(make_tar({"set/a.bin": b"x" * 5000}))
    with pytest.raises(DataError, match="understate"):
        download._write_members([(("a.bin",), download._Member("set/a.bin", 10, False,
                                                                 lambda: io.BytesIO(b"x" * 5000)))],
                                tmp_path, arc, max_bytes=100, total=10, quiet=True)


def test_damaged_archive_is_a_one_line_error(tmp_path):
    data = make_zip({"set/a.jpg": payload(50_000)})
    arc = tmp_path / "set.zip"
    arc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged"):
        extract(arc, tmp_path / "set", root_in_archive="set", quiet=True)
    assert not (tmp_path / "set").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["set.zip"]


def test_extract_never_writes_into_an_existing_folder(tmp_path):
    arc = tmp_path / "set.zip"
    arc.write_bytes(make_zip({"set/a.jpg": b"a"}))
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="already exists"):
        extract(arc, tmp_path / "set", root_in_archive="set", quiet=True)
    assert (tmp_path / "set" / "mine.txt").read_text() == "keep"


def test_retry_log_says_what_happened(server, tmp_path, caplog):
    data = payload()
    url = server.add("/set.zip", data)
    server.behaviour.drop_first["/set.zip"] = 100
    with caplog.at_level(logging.INFO, logger="translate.data"):
        fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True, backoff=0)
    assert any("interrupted" in r.message for r in caplog.records)


def test_no_content_length(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    server.behaviour.no_length = True
    out, digest = fetch(RemoteFile(url, "set.zip", None, None), tmp_path / "set.zip", quiet=True)
    assert out.read_bytes() == data and digest == sha(data)


def test_complete_part_file_of_unknown_size_is_kept_on_416(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    (tmp_path / "set.zip.part").write_bytes(data)
    out, digest = fetch(RemoteFile(url, "set.zip"), tmp_path / "set.zip", quiet=True)
    assert out.read_bytes() == data and [r for _, r in server.behaviour.requests] == [f"bytes={len(data)}-"]


def test_a_206_for_another_range_is_not_appended(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    (tmp_path / "set.zip.part").write_bytes(data[:5000])
    server.behaviour.range_shift = 100
    out, _ = fetch(RemoteFile(url, "set.zip", None, None), tmp_path / "set.zip", quiet=True, backoff=0)
    assert out.read_bytes() == data
    assert [r for _, r in server.behaviour.requests] == ["bytes=5000-", None]


def test_a_wrong_file_put_by_hand_is_replaced_by_a_download(server, tmp_path):
    data = payload()
    url = server.add("/set.zip", data)
    (tmp_path / "set.zip").write_bytes(b"something else")
    out, _ = fetch(RemoteFile(url, "set.zip", len(data), sha(data)), tmp_path / "set.zip", quiet=True)
    assert out.read_bytes() == data


def test_folders_zipped_on_windows_and_duplicate_members(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("set\\trainA\\"), b"")
        zf.writestr("set/trainA/a.jpg", b"a")
    arc = tmp_path / "w.zip"
    arc.write_bytes(buf.getvalue())
    extract(arc, tmp_path / "out", root_in_archive="set", quiet=True)
    assert (tmp_path / "out" / "trainA" / "a.jpg").read_bytes() == b"a"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("set/a", b"file")
        zf.writestr("set/a/b.jpg", b"then a folder of the same name")
    arc.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="both a file and a folder"):
        extract(arc, tmp_path / "out2", root_in_archive="set", quiet=True)
    assert not (tmp_path / "out2").exists()


def test_damaged_manifest_is_a_clear_error(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="damaged"):
        check_manifest(tmp_path, quiet=True)


@pytest.mark.skipif(not hasattr(__import__("tarfile"), "data_filter"), reason="Python without tarfile.data_filter")
def test_tar_members_pass_the_standard_librarys_data_filter_first(tmp_path):
    arc = tmp_path / "set.tar.gz"
    arc.write_bytes(make_tar({"set/trainA/a.jpg": b"a", "set/../../evil.txt": b"evil"}))
    with pytest.raises(DataError, match="data filter"):
        extract(arc, tmp_path / "set", root_in_archive="set", quiet=True)
    assert not (tmp_path / "set").exists()
