"""Named data sets: the registry, ``translate data ...`` and ``translate train --pair`` against a
local HTTP server that serves archives built here (the test machines have no internet)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_line_error, write_image
from fileserver import FileServer, closed_port_url

from translate.cli import cli
from translate.data import pairs
from translate.data.download import MANIFEST, RemoteFile
from translate.errors import ConfigError, DataError

ISSUE_NAMES = ["apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
               "ukiyoe2photo", "vangogh2photo", "maps", "facades", "iphone2dslr_flower", "ae_photos", "cityscapes",
               "edges2shoes", "edges2handbags", "night2day", "mnist", "fashion_mnist"]
TINY = ["--size", "32", "--steps", "2", "--workers", "0", "--set", "ngf=8", "--set", "ndf=8", "--set", "n_samples=2"]


def invoke(*args, env=None):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)], env=env)
    return result.exit_code, result.output




def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(seed: int, size=(40, 40), fmt="PNG") -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def unpaired_zip(top: str = "toy2toy", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for side, n in (("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 2)):
            for i in range(n):
                zf.writestr(f"{top}/{side}/{i}.png", image_bytes(hash((side, i)) % 1000))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def aligned_tar(top: str = "toyfacades") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                data = image_bytes(i, size=(80, 40), fmt="JPEG")
                info = tarfile.TarInfo(f"{top}/{split}/{i + 1}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture
def register(monkeypatch):
    """Add a data set to the registry for one test."""
    def add(ds: pairs.Dataset) -> pairs.Dataset:
        monkeypatch.setitem(pairs.DATASETS, ds.name, ds)
        return ds
    return add


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(pairs.ROOT_ENV, raising=False)
    monkeypatch.delenv(pairs.MIRROR_ENV, raising=False)
    monkeypatch.setattr("translate.data.download.time.sleep", lambda s: None)


def toy_unpaired(url: str, data: bytes | None, name: str = "toy2toy") -> pairs.Dataset:
    return pairs.Dataset(
        name=name, kind="unpaired", description="toy", licence="test", citation="test",
        files=(RemoteFile(url, "toy2toy.zip", len(data) if data else None, sha(data) if data else None),),
        layout=("trainA", "trainB"), layout_note="trainA/ trainB/", archive_root="toy2toy",
        recipe=dict(pairs.CYCLEGAN_RECIPE), counts={"trainA": 4, "trainB": 3, "testA": 2, "testB": 2})


def toy_paired(url: str) -> pairs.Dataset:
    return pairs.Dataset(
        name="toyfacades", kind="paired", description="toy", licence="test", citation="test",
        files=(RemoteFile(url, "toyfacades.tar.gz"),), layout=("train",), layout_note="train/",
        archive_root="toyfacades", recipe={**pairs.PIX2PIX_RECIPE, "direction": "BtoA"})


# --- the registry -------------------------------------------------------------------------------
def test_registry_has_every_named_set_with_its_facts():
    for name in ISSUE_NAMES:
        ds = pairs.get(name)
        assert ds.licence and ds.citation and ds.layout_note and ds.description, name
        if ds.manual:
            assert "cityscapes-dataset.com" in ds.manual and "side by side" in ds.manual
            continue
        assert ds.files and all(f.url.startswith(("http://", "https://")) for f in ds.files), name
        assert all(f.url.endswith(f.filename) for f in ds.files)
        assert (ds.size and ds.size > 1000) or name == "ae_photos", name  # its size is published nowhere
        for f in ds.files:
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), name
    for name in ["horse2zebra", "apple2orange", "facades_unpaired", "maps_unpaired", "mnist", "fashion_mnist"]:
        assert all(f.sha256 and f.size for f in pairs.get(name).files), name
    assert pairs.get("horse2zebra").files[0].url == "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip"
    assert pairs.get("facades").files[0].url == "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
    assert pairs.get("fashion-mnist") is pairs.get("fashion_mnist")
    assert len(pairs.get("mnist").classes) == 10


def test_recipes_are_the_references():
    h2z = pairs.get("horse2zebra").recipe
    assert h2z["model"] == "cyclegan" and h2z["lambda_cycle"] == 10 and h2z["lambda_identity"] == 0.5
    assert h2z["epochs"] == 200 and h2z["size"] == 256 and h2z["gan_loss"] == "lsgan"
    facades = pairs.get("facades").recipe
    assert facades["model"] == "pix2pix" and facades["direction"] == "BtoA" and facades["lambda_l1"] == 100
    shoes = pairs.get("edges2shoes").recipe
    assert shoes["epochs"] == 15 and shoes["batch_size"] == 4


def test_every_training_recipe_is_a_valid_config(monkeypatch, tmp_path):
    from translate.train import build_config

    monkeypatch.setattr(pairs, "ensure", lambda ds, root, **kw: tmp_path)
    for ds in pairs.DATASETS.values():
        if ds.recipe and ds.recipe["model"] in ("cyclegan", "pix2pix"):
            cfg = build_config({"pair": ds.name})
            assert cfg.train.model == ds.recipe["model"] and cfg.train.pair == ds.name
            assert cfg.train.data == str(tmp_path)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean horse2zebra"):
        pairs.get("horse2zebr")


def test_data_list_info(tmp_path):
    code, text = invoke("data", "list", "--root", tmp_path)
    assert code == 0
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    for name in ISSUE_NAMES:
        assert name in lines
    assert lines["horse2zebra"][1:] == ["unpaired", "111.5", "MB", "no"]
    assert lines["cityscapes"][2] == "manual"
    code, text = invoke("data", "info", "horse2zebra")
    assert code == 0
    for fragment in ("licence", "citation", "Zhu", "trainA/", "recipe", "--model cyclegan", "a74d9d39"):
        assert fragment in text
    code, text = invoke("data", "info", "mnist")
    assert "classes" in text and "10: 0, 1, 2" in text


def test_data_list_shows_what_is_on_disk(tmp_path):
    write_image(tmp_path / "horse2zebra" / "trainA" / "1.png")
    write_image(tmp_path / "horse2zebra" / "trainB" / "1.png")
    code, text = invoke("data", "list", "--root", tmp_path)
    assert re.search(r"horse2zebra\s+unpaired.*yes", text)
    code, text = invoke("data", "list", env={pairs.ROOT_ENV: str(tmp_path)})
    assert re.search(r"horse2zebra\s+unpaired.*yes", text)


# --- download -> verify ---------------------------------------------------------------------------
def test_download_verify_and_list(server, register, tmp_path):
    data = unpaired_zip(extra={"__MACOSX/toy2toy/._0.png": b"junk"})
    register(toy_unpaired(server.add("/cyclegan/toy2toy.zip", data), data))
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    assert code == 0, text
    folder = tmp_path / "toy2toy"
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST, "testA", "testB", "trainA", "trainB"]
    assert len(list((folder / "trainA").iterdir())) == 4
    assert not (tmp_path / "downloads").exists()  # the archive is removed once unpacked
    assert invoke("data", "verify", "toy2toy", "--root", tmp_path)[0] == 0
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    assert code == 0 and "already" in text and len(server.behaviour.requests) == 1
    # damage one file: verify names it and fails with one line
    (folder / "trainB" / "1.png").write_bytes(b"not the original")
    code, text = invoke("data", "verify", "toy2toy", "--root", tmp_path)
    one_line_error(code, text, "1 problem", "translate data download toy2toy")
    assert "trainB/1.png" in text


def test_download_keep_archive(server, register, tmp_path):
    data = unpaired_zip()
    register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    assert invoke("data", "download", "toy2toy", "--root", tmp_path, "--keep-archive")[0] == 0
    assert (tmp_path / "downloads" / "toy2toy" / "toy2toy.zip").read_bytes() == data


def test_resume_after_a_dropped_connection(server, register, tmp_path):
    data = unpaired_zip() + b""  # the zip itself
    register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    server.behaviour.drop_first["/toy2toy.zip"] = len(data) // 2
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    assert code == 0, text
    assert [r for _, r in server.behaviour.requests] == [None, f"bytes={len(data) // 2}-"]
    assert (tmp_path / "toy2toy" / "trainA" / "0.png").is_file()


def test_corrupt_archive_is_refused_and_cleaned_up(server, register, tmp_path):
    data = unpaired_zip()
    tampered = bytearray(data)
    tampered[len(data) // 3] ^= 0xFF
    register(toy_unpaired(server.add("/toy2toy.zip", bytes(tampered)), data))
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    one_line_error(code, text, "corrupt", sha(data), sha(bytes(tampered)), "removed")
    assert not (tmp_path / "toy2toy").exists()
    assert not any(p.is_file() and p.name not in ("checksums.json", pairs.LOCK_FILE) for p in tmp_path.rglob("*"))


def test_path_traversal_archive_is_refused(server, register, tmp_path):
    data = unpaired_zip(extra={"toy2toy/../../escaped.txt": b"owned"})
    register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    root = tmp_path / "root"
    code, text = invoke("data", "download", "toy2toy", "--root", root)
    one_line_error(code, text, "escapes the target folder", "refusing")
    assert not (root / "toy2toy").exists() and not (tmp_path / "escaped.txt").exists()
    assert not list(root.glob(".toy2toy*"))  # no half-extracted temp folder


def test_mirror_by_option_and_environment(server, register, tmp_path):
    data = unpaired_zip()
    register(toy_unpaired("http://official.invalid/cyclegan/toy2toy.zip", data))
    server.add("/mirror/toy2toy.zip", data)
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path / "a", "--mirror", server.url + "/mirror")
    assert code == 0, text
    # a flat mirror folder works; <mirror>/<name>/<file> is tried first (MNIST and Fashion-MNIST share names)
    assert [p for p, _ in server.behaviour.requests] == ["/mirror/toy2toy/toy2toy.zip", "/mirror/toy2toy.zip"]
    server.add("/mirror/toy2toy/toy2toy.zip", data)
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path / "b",
                        env={pairs.MIRROR_ENV: server.url + "/mirror/"})
    assert code == 0, text
    assert (tmp_path / "b" / "toy2toy" / "trainB").is_dir()
    assert server.behaviour.requests[-1][0] == "/mirror/toy2toy/toy2toy.zip" and len(server.behaviour.requests) == 3


def test_from_archive_checks_and_unpacks_a_local_file(register, tmp_path):
    data = unpaired_zip()
    register(toy_unpaired(closed_port_url("/toy2toy.zip"), data))
    archive = tmp_path / "elsewhere" / "toy2toy.zip"
    archive.parent.mkdir()
    archive.write_bytes(data)
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path / "root", "--from-archive", archive)
    assert code == 0, text
    assert (tmp_path / "root" / "toy2toy" / "trainA" / "3.png").is_file()
    assert archive.read_bytes() == data  # the user's file is left alone
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(unpaired_zip(top="toy2toy", extra={"toy2toy/x.txt": b"x"}))
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path / "r2", "--from-archive", wrong)
    one_line_error(code, text, str(wrong))


def test_offline_message_says_which_url_to_fetch_and_where_to_put_it(register, tmp_path):
    url = closed_port_url("/cyclegan/toy2toy.zip")
    register(toy_unpaired(url, unpaired_zip()))
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    line = one_line_error(code, text, url, f"put it in {tmp_path / 'downloads' / 'toy2toy'}",
                          "translate data download toy2toy --from-archive FILE")
    assert "internet" in line
    # the file put there by hand is then used
    dest = tmp_path / "downloads" / "toy2toy" / "toy2toy.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(unpaired_zip())
    assert invoke("data", "download", "toy2toy", "--root", tmp_path)[0] == 0


def test_unpublished_checksum_is_recorded_by_the_first_download(server, register, tmp_path):
    data = aligned_tar()
    ds = register(toy_paired(server.add("/pix2pix/toyfacades.tar.gz", data)))
    assert invoke("data", "download", ds.name, "--root", tmp_path)[0] == 0
    recorded = json.loads((tmp_path / "checksums.json").read_text())
    assert recorded["toyfacades/toyfacades.tar.gz"] == {"size": len(data), "sha256": sha(data)}
    server.behaviour.files["/pix2pix/toyfacades.tar.gz"] = aligned_tar(top="toyfacades") + b"\0" * 10
    code, text = invoke("data", "download", ds.name, "--root", tmp_path / "again")
    assert code == 0  # another root, another record
    import shutil

    shutil.rmtree(tmp_path / "toyfacades")
    code, text = invoke("data", "download", ds.name, "--root", tmp_path)
    one_line_error(code, text, "corrupt", sha(data))


def test_archive_without_the_expected_layout(server, register, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toy2toy/images/0.png", image_bytes(0))
    data = buf.getvalue()
    register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    one_line_error(code, text, "trainA", "not the expected archive", "the download was removed")
    assert not (tmp_path / "toy2toy").exists()
    assert not (tmp_path / "downloads" / "toy2toy" / "toy2toy.zip").exists()  # the next run fetches afresh


def test_an_incomplete_folder_is_never_overwritten(server, register, tmp_path):
    data = unpaired_zip()
    register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    write_image(tmp_path / "toy2toy" / "trainA" / "mine.png")
    code, text = invoke("data", "download", "toy2toy", "--root", tmp_path)
    one_line_error(code, text, "not a complete toy2toy", "move it away")
    assert (tmp_path / "toy2toy" / "trainA" / "mine.png").is_file()
    assert server.behaviour.requests == []


def test_several_loose_files_like_mnist(server, register, tmp_path):
    files = {n: bytes([i]) * (100 + i) for i, n in enumerate(["train-images.gz", "train-labels.gz"])}
    ds = register(pairs.Dataset(
        name="toymnist", kind="labelled", description="toy", licence="t", citation="t",
        files=tuple(RemoteFile(server.add(f"/m/{n}", d), n, len(d), sha(d)) for n, d in files.items()),
        layout=tuple(files), layout_note="idx", recipe={"model": "dcgan", "size": 28}, classes=("0", "1")))
    assert invoke("data", "download", ds.name, "--root", tmp_path)[0] == 0
    for n, d in files.items():
        assert (tmp_path / "toymnist" / n).read_bytes() == d
    assert invoke("data", "verify", ds.name, "--root", tmp_path)[0] == 0
    local = tmp_path / "offline"
    local.mkdir()
    for n, d in files.items():
        (local / n).write_bytes(d)
    assert invoke("data", "download", ds.name, "--root", tmp_path / "r2", "--from-archive", local)[0] == 0
    code, text = invoke("train", "--pair", ds.name, "--root", tmp_path)
    one_line_error(code, text, "toymnist", "holds no images")  # no IDX files by their published names


def test_alternate_hosts_are_tried_in_order(server, register, tmp_path):
    data = b"x" * 1000
    url = closed_port_url("/dead/f.gz")
    ds = register(pairs.Dataset(
        name="alt", kind="labelled", description="t", licence="t", citation="t",
        files=(RemoteFile(url, "f.gz", len(data), sha(data), (server.url + "/gone/f.gz", server.url + "/ok/f.gz")),),
        layout=("f.gz",), layout_note="f"))
    server.add("/ok/f.gz", data)
    code, text = invoke("data", "download", ds.name, "--root", tmp_path)
    assert code == 0, text
    assert [p for p, _ in server.behaviour.requests] == ["/gone/f.gz", "/ok/f.gz"]


# --- train --pair -------------------------------------------------------------------------------
def test_train_pair_downloads_then_trains_with_the_recipe(server, register, tmp_path):
    data = aligned_tar()
    register(toy_paired(server.add("/toyfacades.tar.gz", data)))
    run = tmp_path / "run"
    code, text = invoke("train", "--pair", "toyfacades", "--root", tmp_path / "data", *TINY, "--run-dir", run)
    assert code == 0, text
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["pair"] == "toyfacades" and cfg["train"]["model"] == "pix2pix"
    assert cfg["train"]["data"] == str((tmp_path / "data" / "toyfacades").resolve())
    assert cfg["model"]["direction"] == "BtoA"  # from the recipe
    assert cfg["train"]["steps"] == 2 and cfg["train"]["epochs"] is None  # --steps replaces the recipe's epochs
    assert (run / "latest").is_file()


def test_options_override_the_recipe(monkeypatch, tmp_path):
    from translate.train import build_config

    monkeypatch.setattr(pairs, "ensure", lambda ds, root, **kw: tmp_path)
    cfg = build_config({"pair": "facades", "direction": "AtoB", "size": 64})
    assert cfg.model.direction == "AtoB" and cfg.train.size == 64 and cfg.train.epochs == 200
    cfg = build_config({"pair": "facades", "model": "cyclegan"})  # another family keeps the schedule only
    assert cfg.train.model == "cyclegan" and cfg.train.epochs == 200 and cfg.model.gan_loss == "lsgan"
    cfg = build_config({"pair": "edges2shoes"}, {"batch_size": 2})  # YAML over the recipe
    assert cfg.train.batch_size == 2 and cfg.train.epochs == 15


def test_train_pair_uses_a_folder_that_is_already_there(tmp_path, aligned_dir, server):
    root = tmp_path / "root"
    aligned_dir.rename(root.mkdir() or root / "facades")
    code, text = invoke("train", "--pair", "facades", "--root", root, *TINY, "--run-dir", tmp_path / "run",
                        "--mirror", server.url)
    assert code == 0, text
    assert server.behaviour.requests == []
    # the root may also be the data set folder itself
    code, text = invoke("train", "--pair", "facades", "--root", root / "facades", *TINY, "--run-dir",
                        tmp_path / "run2", env={pairs.MIRROR_ENV: server.url})
    assert code == 0, text
    assert server.behaviour.requests == []


@pytest.mark.parametrize("args, fragments", [
    (["--pair", "facades", "--data", "x"], ["--pair facades and --data"]),
    (["--pair", "horse2zebr"], ["did you mean horse2zebra"]),
    (["--pair", "ae_photos"], ["not a training set"]),
    (["--pair", "facades", "--size", "20"], ["--size"]),
])
def test_train_pair_errors(tmp_path, server, args, fragments):
    code, text = invoke("train", *args, "--root", tmp_path, "--mirror", server.url)
    one_line_error(code, text, *fragments)
    assert server.behaviour.requests == []  # bad options are caught before any download


def test_manual_data_set_explains_how_to_get_it(tmp_path):
    code, text = invoke("train", "--pair", "cityscapes", "--root", tmp_path)
    one_line_error(code, text, "cityscapes-dataset.com", "gtFine", str(tmp_path / "cityscapes"))
    code, text = invoke("data", "download", "cityscapes", "--root", tmp_path)
    one_line_error(code, text, "redistribution")


def test_verify_a_folder_from_elsewhere(tmp_path):
    root = tmp_path
    for i in range(3):
        write_image(root / "facades" / "train" / f"{i}.jpg", size=(80, 40))
    (root / "facades" / "train" / "bad.jpg").write_bytes(b"not a jpeg")
    code, text = invoke("data", "verify", "facades", "--root", root)
    one_line_error(code, text, "1 problem")
    assert "bad.jpg" in text
    (root / "facades" / "train" / "bad.jpg").unlink()
    code, text = invoke("data", "verify", "facades", "--root", root)
    assert code == 0 and "train/ has 3 images; the published set has 400" in text
    one_line_error(*invoke("data", "verify", "horse2zebra", "--root", root), "translate data download horse2zebra")


def test_registry_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        pairs.get("facades").name = "x"  # type: ignore[misc]


def test_data_commands_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from translate.cli import cli; "
            f"cli(['data', 'list', '--root', {str(tmp_path)!r}], standalone_mode=False); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_data_error_classes():
    assert issubclass(pairs.OfflineError, DataError)


def test_concurrent_callers_download_once(server, register, tmp_path):
    """Processes started together (torchrun ranks) take turns: one downloads, the rest find the folder."""
    import threading

    data = unpaired_zip()
    ds = register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    results, errors = [], []

    def run():
        try:
            results.append(pairs.ensure(ds, tmp_path, quiet=True))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [tmp_path / "toy2toy"] * 3
    assert len(server.behaviour.requests) == 1


def test_docs_list_every_data_set():
    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    for ds in pairs.DATASETS.values():
        assert f"| `{ds.name}` | {ds.kind} |" in text, ds.name


def test_a_truncated_download_is_removed_and_its_digest_never_recorded(server, register, tmp_path):
    """No published size or sha256 and no Content-Length: a cut-off archive looks complete until it
    fails to unpack. It must not become the trusted digest."""
    data = aligned_tar()
    ds = register(toy_paired(server.add("/toyfacades.tar.gz", data)))
    server.behaviour.truncate_first["/toyfacades.tar.gz"] = len(data) // 2
    code, text = invoke("data", "download", ds.name, "--root", tmp_path)
    one_line_error(code, text, "damaged", "removed the download", "run the command again")
    assert not (tmp_path / "checksums.json").exists()
    assert not (tmp_path / "downloads" / ds.name / "toyfacades.tar.gz").exists()
    code, text = invoke("data", "download", ds.name, "--root", tmp_path)
    assert code == 0, text
    assert json.loads((tmp_path / "checksums.json").read_text())[f"{ds.name}/toyfacades.tar.gz"]["sha256"] == sha(data)


def test_a_wrong_from_archive_file_is_not_recorded(register, tmp_path):
    ds = register(toy_paired(closed_port_url("/toyfacades.tar.gz")))
    wrong = tmp_path / "toyfacades.tar.gz"
    wrong.write_bytes(unpaired_zip())  # a zip, named like the tar
    code, text = invoke("data", "download", ds.name, "--root", tmp_path / "r", "--from-archive", wrong)
    assert code != 0 and "Traceback" not in text
    assert not (tmp_path / "r" / "checksums.json").exists()
    assert wrong.is_file()  # never deleted: it is the user's


def test_root_is_a_data_set_folder_only_for_that_data_set(tmp_path):
    for i in range(2):
        write_image(tmp_path / "facades" / "train" / f"{i}.jpg", size=(80, 40))
    code, text = invoke("data", "list", "--root", tmp_path / "facades")
    downloaded = {line.split()[0] for line in text.splitlines() if line.rstrip().endswith("yes")}
    assert downloaded == {"facades"}
    one_line_error(*invoke("data", "verify", "maps", "--root", tmp_path / "facades"), "maps is not in")


def test_stale_partial_folders_are_cleaned(server, register, tmp_path):
    data = unpaired_zip()
    ds = register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    stale = tmp_path / ".toy2toy.abc123.partial"
    (stale / "trainA").mkdir(parents=True)
    assert invoke("data", "download", ds.name, "--root", tmp_path)[0] == 0
    assert not stale.exists()


def test_skip_checksum_accepts_a_repacked_archive(server, register, tmp_path):
    data = unpaired_zip()
    repacked = unpaired_zip(extra={"toy2toy/readme.txt": b"repacked"})
    ds = register(toy_unpaired(server.add("/toy2toy.zip", repacked), data))
    one_line_error(*invoke("data", "download", ds.name, "--root", tmp_path), "--skip-checksum")
    code, text = invoke("data", "download", ds.name, "--root", tmp_path, "--skip-checksum")
    assert code == 0, text
    assert (tmp_path / "toy2toy" / "trainA").is_dir()


def test_no_space_to_unpack_keeps_the_download(server, register, tmp_path, monkeypatch):
    from translate.data import download

    data = unpaired_zip()
    ds = register(toy_unpaired(server.add("/toy2toy.zip", data), data))
    real = download.check_free_space

    def full_disk(folder, needed, what):
        if what.startswith("unpacking"):
            raise download.NoSpaceError(f"not enough disk space in {folder} for {what}")
        return real(folder, needed, what)

    monkeypatch.setattr(download, "check_free_space", full_disk)
    one_line_error(*invoke("data", "download", ds.name, "--root", tmp_path), "not enough disk space")
    assert (tmp_path / "downloads" / "toy2toy" / "toy2toy.zip").read_bytes() == data  # kept for the next run
    monkeypatch.setattr(download, "check_free_space", real)
    assert invoke("data", "download", ds.name, "--root", tmp_path)[0] == 0
    assert len(server.behaviour.requests) == 1


def test_sets_sharing_file_names_are_told_apart(server, register, tmp_path):
    files = {"train-images.gz": b"digits" * 50}
    make = lambda name: register(pairs.Dataset(  # noqa: E731
        name=name, kind="labelled", description="t", licence="t", citation="t",
        files=tuple(RemoteFile(server.add(f"/{name}/{n}", d), n, len(d), sha(d)) for n, d in files.items()),
        layout=tuple(files), layout_note="idx"))
    digits, clothes = make("toydigits"), make("toyclothes")
    assert invoke("data", "download", digits.name, "--root", tmp_path)[0] == 0
    assert pairs.locate(digits, tmp_path / "toydigits") == tmp_path / "toydigits"
    assert pairs.locate(clothes, tmp_path / "toydigits") is None
