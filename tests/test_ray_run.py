"""`translate run --ray`: the batch run on a Ray cluster (Ray Data) against the local run.

Most tests share one in-process Ray session (``ray.init(num_cpus=2)`` on 127.0.0.1, small object
store, no dashboard); one starts a ``ray start --head`` process and runs the CLI in subprocesses
that join it by address. Every cluster is stopped at the end of the module.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import BLOCK_TORCH, TINY, one_line_error, write_image
from PIL import Image

from translate.cli import cli

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'translate[ray]')")
ROOT = Path(__file__).resolve().parents[1]
# every cluster here takes one token, given to every process by the environment (none written to ~/.ray)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess (read when it starts: conftest's private TRANSLATE_CACHE
    included, where the actors cache the model)."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, **RAY_ENV, "PYTHONPATH": path, **extra}


def invoke(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output


def _export(root: Path, model: str) -> Path:
    from translate.export import export_generator
    from translate.train import build_config, train

    run = root / f"{model}-run"
    train(build_config({**TINY, "model": model, "steps": 2, "size": 64 if model == "pix2pix" else 32}), run,
          quiet=True)
    return export_generator(run, out=root / f"{model}.onnx", quiet=True).path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-models")
    return {"cyclegan": _export(root, "cyclegan"), "pix2pix": _export(root, "pix2pix")}


@pytest.fixture(scope="module")
def ray_session():
    """One in-process Ray cluster for the module: 2 CPUs on 127.0.0.1."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    import logging

    import ray

    before = {k: os.environ.get(k) for k in RAY_ENV}
    # the token alone: a new local cluster then turns token mode on itself (RAY_AUTH_MODE is read
    # when ray is imported, which happened at collection)
    os.environ.update({k: v for k, v in RAY_ENV.items() if k != "RAY_AUTH_MODE"})
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=128 << 20, _temp_dir=temp,
             _node_ip_address="127.0.0.1", logging_level=logging.WARNING, configure_logging=False,
             log_to_driver=False)  # as translate run --ray connects (without --debug)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_inputs(root: Path, n: int = 10) -> Path:
    """Images of several sizes and modes in nested folders (and a folder named like an image)."""
    inp = root / "in"
    for i in range(n):
        write_image(inp / f"{i:02d}.png", size=(40 + 8 * (i % 3), 32), seed=i)
    write_image(inp / "nested" / "deeper" / "g.png", size=(64, 48), mode="L", seed=20)
    write_image(inp / "nested" / "rgba.png", size=(20, 24), mode="RGBA", seed=21)
    write_image(inp / "nested" / "p.gif", size=(30, 30), mode="P", seed=22)
    write_image(inp / "j.jpg", size=(33, 47), seed=23)
    write_image(inp / "folder.png" / "inside.png", size=(36, 36), seed=24)
    return inp


def differing(a: Path, b: Path) -> int:
    """Both folders hold the same files, and their images agree within one grey level; returns how
    many pixel values differ (by that one level) in all."""
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb and fa
    count = 0
    for rel in fa:
        x, y = Image.open(a / rel), Image.open(b / rel)
        assert x.mode == y.mode and x.size == y.size, rel
        diff = np.abs(np.asarray(x).astype(int) - np.asarray(y).astype(int))
        assert diff.max() <= 1, (rel, diff.max())
        count += int((diff > 0).sum())
    return count


def assert_same_outputs(a: Path, b: Path) -> int:
    """Both folders hold the same images (within one grey level, in a few values at most)."""
    total = sum(np.asarray(Image.open(p)).size for p in a.rglob("*") if p.is_file())
    assert differing(a, b) <= total // 1000
    return sum(1 for p in a.rglob("*") if p.is_file())


@needs_ray
def test_outputs_equal_the_local_run(models, ray_session, tmp_path):
    inp = make_inputs(tmp_path)
    for name, extra in (("cyclegan", ["--batch-size", "3", "--format", "jpg"]), ("pix2pix", ["--seed", "3"])):
        local, dist = tmp_path / f"{name}-local", tmp_path / f"{name}-ray"
        code, text = invoke("run", inp, local, "--model", models[name], *extra)
        assert code == 0, text
        code, text = invoke("run", inp, dist, "--model", models[name], *extra, "--ray")
        assert code == 0, text
        assert "translated 15 image(s)" in text
        assert assert_same_outputs(local, dist) == 15
        assert not list(dist.rglob(".*.tmp*"))  # atomic writes leave no temporaries
    # the model reached the actors through Ray, cached on the machine (here the tests' private cache)
    assert list((Path(os.environ["TRANSLATE_CACHE"]) / "ray-models").glob("*-cyclegan.onnx"))
    # the alpha channel comes back, as in the local run
    rgba = np.asarray(Image.open(tmp_path / "pix2pix-ray" / "nested" / "rgba.png"))
    alpha = np.asarray(Image.open(inp / "nested" / "rgba.png"))[..., 3]
    assert rgba.shape[2] == 4 and np.array_equal(rgba[..., 3], alpha)
    # pix2pix noise is keyed by --seed and the file's path, on any actor: another seed changes more
    # than running on the cluster does (the barely trained generator's noise moves values by one level)
    assert invoke("run", inp, tmp_path / "s4", "--model", models["pix2pix"], "--seed", "4", "--ray")[0] == 0
    same_seed = differing(tmp_path / "pix2pix-local", tmp_path / "pix2pix-ray")
    assert differing(tmp_path / "pix2pix-ray", tmp_path / "s4") > 10 * same_seed


@needs_ray
def test_bad_files_are_reported_by_name_and_skipped(models, ray_session, tmp_path):
    inp = tmp_path / "in"
    for i in range(4):
        write_image(inp / f"good{i}.png", seed=i)
    buf = tmp_path / "full.jpg"
    write_image(buf, size=(64, 64), seed=9)
    (inp / "truncated.jpg").write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    (inp / "empty.png").write_bytes(b"")
    (inp / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (inp / "folder.jpg").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"in/{n}" for n in ["good0.png", "truncated.jpg", "good1.png", "empty.png",
                                                       "noise.jpg", "folder.jpg", "good2.png", "good3.png"]))
    runs = {}
    for where, extra in (("local", []), ("ray", ["--ray"])):
        code, text = invoke("run", listing, tmp_path / where, "--model", models["cyclegan"], *extra)
        assert code == 1, text
        assert "translated 4 image(s)" in text and "4 failed" in text and "Traceback" not in text
        runs[where] = sorted(line.split(":")[1].strip() for line in text.splitlines() if line.startswith("failed:"))
    assert runs["ray"] == runs["local"] == sorted(str(inp / n) for n in ["truncated.jpg", "empty.png", "noise.jpg",
                                                                          "folder.jpg"])
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [f"good{i}.png" for i in range(4)]


class _Crashing:
    """Mixed into the actor class: its process kills itself (SIGKILL) on its second batch, once per
    test (a marker file), and records which torch modules it has loaded."""

    marker: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0
        with open(self.marker + ".modules", "a") as f:
            f.write(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))) + "\n")

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:
                pass
        return super().__call__(batch)


def _journaled(original, journal: str):
    def write(batch, overwrite=False):
        before = {str(d): os.path.exists(str(d)) for d in batch["dst"]}
        out = original(batch, overwrite)
        with open(journal, "a") as f:
            for d, e in zip(batch["dst"], out["error"]):
                if not e and not before[str(d)]:
                    f.write(f"{d}\n")
        return out
    return write


@needs_ray
def test_an_actor_killed_mid_job_is_replaced_and_every_output_written_once(models, ray_session, tmp_path,
                                                                            monkeypatch):
    from ray import cloudpickle

    from translate import ray_run

    inp = tmp_path / "in"
    for i in range(24):
        write_image(inp / f"{i:02d}.png", size=(32, 32), seed=i)
    marker = str(tmp_path / "crashed")
    crashing = type("CrashingActor", (_Crashing, ray_run.TranslateActor), {"marker": marker})
    crashing.__module__ = __name__
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    monkeypatch.setattr(ray_run, "TranslateActor", crashing)
    monkeypatch.setattr(ray_run, "write_batch", _journaled(ray_run.write_batch, str(tmp_path / "journal")))
    try:
        code, text = invoke("run", inp, tmp_path / "ray", "--model", models["pix2pix"], "--seed", "1",
                            "--batch-size", "2", "--ray", "--actors", "1")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert code == 0, text
    assert os.path.exists(marker), "the actor never died"
    assert len(Path(marker + ".modules").read_text().splitlines()) >= 2  # the actor was started again
    assert "translated 24 image(s)" in text
    written = Path(tmp_path / "journal").read_text().splitlines()
    assert sorted(written) == sorted(str(tmp_path / "ray" / f"{i:02d}.png") for i in range(24))  # each once
    assert invoke("run", inp, tmp_path / "local", "--model", models["pix2pix"], "--seed", "1")[0] == 0
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")
    # the serving path: the actors never imported torch
    assert all(json.loads(line) == [] for line in Path(marker + ".modules").read_text().splitlines())


@needs_ray
def test_refusals_and_option_errors(models, ray_session, tmp_path):
    inp = tmp_path / "in"
    write_image(inp / "a.png")
    write_image(inp / "a.jpg", seed=1)
    m = models["cyclegan"]
    one_line_error(*invoke("run", inp, inp / "out", "--model", m, "--ray"), "inside the input folder")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--format", "png", "--ray"), "both be written")
    one_line_error(*invoke("run", inp / "a.png", inp, "--model", m, "--ray"), "would replace an input")
    one_line_error(*invoke("run", tmp_path / "nope", tmp_path / "o", "--model", m, "--ray"), "does not exist")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--actors", "2"), "go with --ray")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "--actors", "3:1"), "MIN:MAX")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "--actors", "0"), "MIN:MAX")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "--gpus-per-actor", "-1"), "0 or more")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "nowhere"), "HOST:PORT")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", bad, "--ray"), "bad.onnx")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "--tile", "64"), "--tile")
    # asking for GPUs on a cluster without any: refused, not a job waiting forever
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", m, "--ray", "--gpus-per-actor", "1"), "no GPUs")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


@needs_ray
def test_each_machine_is_asked_whether_it_sees_input_and_output(ray_session, tmp_path):
    """(On one machine the check is skipped; here it is forced, with an input no worker can see.)"""
    from translate.errors import TranslateError
    from translate.ray_run import check_paths
    from translate.runtime import Job

    write_image(tmp_path / "in" / "a.png")
    seen = [Job(tmp_path / "in" / "a.png", tmp_path / "out" / "a.png", "a.png")]
    check_paths(ray_session, seen, tmp_path / "out", min_nodes=1)
    assert (tmp_path / "out").is_dir()
    unseen = [Job(tmp_path / "elsewhere" / "b.png", tmp_path / "out" / "b.png", "b.png")]
    with pytest.raises(TranslateError, match="cannot see .*elsewhere.*shared filesystem"):
        check_paths(ray_session, unseen, tmp_path / "out", min_nodes=1)


class _Unloadable:
    """Mixed into the actor class: the model reaches the actor broken."""

    def __init__(self, model, name, **kwargs):
        super().__init__(b"not an onnx model", name, **kwargs)


@needs_ray
def test_an_actor_that_cannot_start_ends_the_job_with_one_line(models, ray_session, tmp_path, monkeypatch):
    from ray import cloudpickle

    from translate import ray_run

    write_image(tmp_path / "in" / "a.png")
    broken = type("UnloadableActor", (_Unloadable, ray_run.TranslateActor), {})
    broken.__module__ = __name__
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ray_run, "TranslateActor", broken)
    try:
        start = time.monotonic()
        code, text = invoke("run", tmp_path / "in", tmp_path / "out", "--model", models["cyclegan"], "--ray")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    one_line_error(code, text, "is not a readable ONNX model")
    assert time.monotonic() - start < 120
    assert not (tmp_path / "out" / "a.png").exists()


def test_without_ray_installed_the_message_names_the_extra(tmp_path):
    write_image(tmp_path / "in" / "a.png")
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('ray', 'torch', 'torchvision'):\n"
            "            raise ImportError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from translate.cli import main\nmain()\n")
    out = subprocess.run([sys.executable, "-c", code, "run", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                          str(tmp_path / "m.onnx"), "--ray"], capture_output=True, text=True, env=env(), timeout=120)
    one_line_error(out.returncode, out.stderr, "pip install 'translate[ray]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    """A `ray start --head` cluster in its own process group, stopped (and checked gone) afterwards."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin) if ray_bin.exists() else "ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--port", str(port), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
           "--disable-usage-stats", "--object-store-memory", str(128 << 20), "--temp-dir", temp,
           "--ray-client-server-port", str(_free_port()), "--dashboard-port", str(_free_port()),
           "--dashboard-agent-listen-port", str(_free_port())]
    log = open(Path(temp) / "head.log", "w")
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env(RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"))  # Ray Data's helper actors
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        up = Path(temp) / "ray_current_cluster"  # written once the head is up
        while not (up.exists() and list(Path(temp).glob("session_*/logs/raylet.out"))):
            assert head.poll() is None and time.monotonic() < deadline, (Path(temp) / "head.log").read_text()
            time.sleep(0.2)
        yield address
    finally:
        head.send_signal(signal.SIGTERM)  # --block: stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        left = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout.split()
        for pid in left:  # anything of this cluster still there (none expected)
            os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


def _cli(*args) -> list[str]:
    """The CLI in a fresh process whose import of torch fails: the driver of a --ray run needs none."""
    code = BLOCK_TORCH + "from translate.cli import main\nmain()\n"
    return [sys.executable, "-c", code, *map(str, args)]


@needs_ray
# slow (make test-all) until understood: in one full-suite run of ~8 (2026-12-03) the Ctrl-C'd job,
# joined to the cluster by address, had not exited 60 s after SIGINT; alone it passes in ~25 s
@pytest.mark.slow
def test_resume_after_an_interrupted_job_on_a_cluster_joined_by_address(models, head_node, tmp_path):
    """A `ray start --head` cluster joined by address: a job interrupted (Ctrl-C) mid-way, run again,
    does only what is missing, and the outputs equal the local run's."""
    inp = tmp_path / "in"
    names = [f"{i:02d}.png" for i in range(16)]
    for i, name in enumerate(names):
        write_image(inp / name, size=(48, 40), seed=i)
    os.mkfifo(inp / "zz.png")  # a read that never ends: the job cannot finish before it is interrupted
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"in/{n}" for n in [*names, "zz.png"]))
    out = tmp_path / "ray"
    args = ["run", listing, out, "--model", models["pix2pix"], "--seed", "5", "--batch-size", "2", "--ray", head_node]
    job = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir())):
            assert job.poll() is None and time.monotonic() < deadline, job.stdout.read() if job.poll() else "too slow"
            time.sleep(0.05)
        job.send_signal(signal.SIGINT)
        text, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 130 and "interrupted" in text, text
    done = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 0 < len(done) < len(names) + 1
    for name in done:  # what the interrupted job wrote is whole
        Image.open(out / name).load()

    try:  # end the read the interrupted job left waiting, if its worker is still there
        os.close(os.open(inp / "zz.png", os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass
    (inp / "zz.png").unlink()
    write_image(inp / "zz.png", size=(48, 40), seed=99)
    again = subprocess.run(_cli(*args), capture_output=True, text=True, env=env(), timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"translated {len(names) + 1 - len(done)} image(s)" in again.stdout
    assert f"{len(done)} already there" in again.stdout
    assert invoke("run", listing, tmp_path / "local", "--model", models["pix2pix"], "--seed", "5")[0] == 0
    assert_same_outputs(tmp_path / "local", out)


_STUCK_SHUTDOWN = """
import sys, threading, time
from pathlib import Path
import translate.ray_run as rr
from translate.runtime import Job

class StuckRay:  # a cluster whose winding down never ends (a worker blocked in a read, say)
    def shutdown(self):
        threading.Event().wait()

def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

rr.INTERRUPT_GRACE_S = 1.0
rr.import_ray = StuckRay
rr.Translator = lambda *a, **k: None
rr.connect = lambda address: rr.Cluster(address="x", started=True, owned=True, seconds=0.0, nodes=1, cpus=2.0, gpus=0.0)
rr._run = interrupted
start = time.monotonic()
try:
    rr.run_on_ray([Job(Path("in.png"), Path(sys.argv[1]), "in.png")], "model.onnx", address="local")
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_ctrl_c_ends_the_job_even_when_ray_cannot_wind_it_down(tmp_path):
    """Ctrl-C during a Ray job whose shutdown never returns: the command still ends, with 130 and
    a line saying why, a grace period after the interrupt (not whenever the cluster lets go)."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _STUCK_SHUTDOWN, str(tmp_path / "out.png")], capture_output=True,
                         text=True, timeout=60, env=env(), cwd=tmp_path)
    assert out.returncode == 130, out.stderr[-2000:]
    assert "interrupted (Ray had not wound the job down after 1 s" in out.stderr
    assert time.monotonic() - start < 30


@needs_ray
@pytest.mark.slow
def test_the_ray_benchmark_runs_and_leaves_no_cluster_behind(tmp_path):
    """bench/ray_speed.py at a tiny size: it starts a local cluster as `--ray local` does, reports
    both rates and the start-up, and its cluster is gone when it ends."""
    out = tmp_path / "ray.json"
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "ray_speed.py"), "--images", "4", "--size", "64",
                          "--repeats", "1", "--json", str(out)], capture_output=True, text=True, timeout=600,
                         cwd=ROOT, env=env(RAY_TMPDIR=temp))
    left = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout.split()
    used = list(Path(temp).rglob("session_2*"))  # the cluster lived under RAY_TMPDIR: pgrep saw its processes
    shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert used
    assert not left, f"Ray processes left behind: {left}"
    report = json.loads(out.read_text())
    assert report["cluster_startup_s"] > 0 and report["ratio"] > 0
    assert report["median"]["ray"]["img_s"] > 0 and report["median"]["local"]["img_s"] > 0
    assert "ray / local" in run.stdout
