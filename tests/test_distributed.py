"""Data-parallel training under torchrun, on the CPU with the Gloo backend and two processes.

The launches go through the real command line (``python -m torch.distributed.run --standalone
--nproc_per_node=2 -m translate train ...``), as a user runs it.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from translate.data.folders import StreamSampler
from translate.engine import distributed
from translate.engine.schedule import lr_factor
from translate.errors import CheckpointError
from translate.train import build_config, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with Gloo")

ROOT = Path(__file__).resolve().parents[1]
# deterministic maths: no dropout, noise or replay; no norm layers (a bias before an instance norm has a zero
# gradient in exact arithmetic, and Adam turns its rounding noise into full-size steps)
EXACT = {"dropout": 0.0, "pool_size": 0, "norm": "none", "instance_noise": 0.0}


def options(**opts) -> list[str]:
    args = []
    for k, v in opts.items():
        if k in ("model", "size", "steps", "batch_size", "workers", "device", "seed", "lr_scaling"):
            args += [f"--{k.replace('_', '-')}", str(v)]
        else:
            args += ["--set", f"{k}={v}"]
    return args


def torchrun(run_dir: Path, *args: str, nproc: int = 2, resume: bool = False,
             gpus: bool = False) -> subprocess.CompletedProcess:
    """``translate train`` under torchrun on this machine (on the CPU unless ``gpus``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "translate", "train", *args]
    cmd += ["--resume", str(run_dir)] if resume else ["--run-dir", str(run_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=run_dir.parent, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / f"step-{step:08d}" / "weights.safetensors"))


def test_stream_shards_are_the_single_process_batches():
    """Two ranks of batch 2 draw exactly the samples (and sample seeds) of one process of batch 4,
    from any start position, across epochs."""
    for start in (0, 4, 8, 6):
        one = iter(StreamSampler(7, seed=3, start=start, batch=4))
        r0 = iter(StreamSampler(7, seed=3, start=start, batch=2, rank=0, world=2))
        r1 = iter(StreamSampler(7, seed=3, start=start, batch=2, rank=1, world=2))
        for _ in range(5):  # five global batches: 20 samples of a 7-sample data set
            whole = [next(one) for _ in range(4)]
            assert [next(r0) for _ in range(2)] + [next(r1) for _ in range(2)] == whole


def test_single_process_world_and_seeds():
    w = distributed.from_env({})
    assert not w.active and w.main
    w = distributed.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert w.active and not w.main and w.describe() == "4 processes (2 per machine, 2 machines)"
    assert distributed.rank_seed(5, 0) == 5  # rank 0 keeps the run's seed: one process is unchanged
    assert len({distributed.rank_seed(5, r) for r in range(4)}) == 4
    assert (lr_factor("none", 4), lr_factor("linear", 4), lr_factor("sqrt", 4)) == (1.0, 4.0, 2.0)


@pytest.mark.parametrize("model", ["cyclegan", "pix2pix"])
def test_two_ranks_equal_one_process_with_the_combined_batch(tmp_path, tiny, model):
    """Where the maths says so (no randomness in a step, per-sample norms), two processes of batch 2
    end with the weights of one process of batch 4: the averaged gradient is the global batch's."""
    opts = dict(tiny, model=model, steps=3, device="cpu", **EXACT)
    train(build_config(dict(opts, batch_size=4)), tmp_path / "one", quiet=True)

    ddp = tmp_path / "two"
    out = torchrun(ddp, *options(**dict(opts, batch_size=2)))
    log = out.stdout + out.stderr
    assert "effective batch 4 (2 per process)" in log and "learning rate 0.0002" in log
    assert log.count(f"{model} on embedded") == 1 and log.count("data parallel over") == 1  # rank 0 alone logs
    a, b = weights(tmp_path / "one", 3), weights(ddp, 3)
    nets = [k for k in a if k.startswith(("generators.", "discriminators."))]
    assert nets and set(nets) <= set(b)
    for key in nets:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-6, msg=key)
    # the logged losses are the global batch's (each rank's mean, averaged)
    rows_a = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3]
    for ra, rb in zip(rows_a, rows_b):
        for k in ra:
            if k.startswith("loss"):
                assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), k
    # rank 0 alone writes: one set of samples and checkpoints, no stray temp folders
    assert sorted(p.name for p in ddp.iterdir() if p.name.startswith((".", "step-"))) == \
        ["step-00000002", "step-00000003"]


def test_two_rank_resume_matches_uninterrupted_run(tmp_path, tiny):
    """Each rank's replay buffer, random state and last fakes are checkpointed and restored: a
    two-process run stopped and resumed ends where the uninterrupted one does, bit for bit, with
    dropout, instance noise and replay all drawing random numbers on both ranks."""
    opts = dict(tiny, model="cyclegan", batch_size=2, device="cpu", dropout=0.5, pool_size=3, instance_noise=0.1,
                instance_noise_steps=8, decay_from=1.0, checkpoint_every=2)
    full = tmp_path / "full"
    torchrun(full, *options(**dict(opts, steps=4)))
    part = tmp_path / "part"
    torchrun(part, *options(**dict(opts, steps=2)))
    saved = weights(part, 2)
    assert any(k.startswith("rank1.pool.") for k in saved) and any(k.startswith("rank1.fakes.") for k in saved)
    assert not torch.equal(saved["rank1.fakes.fake_A"], saved["fakes.fake_A"])  # each rank its own batch
    out = torchrun(part, "--steps", "4", resume=True)
    assert "resumed" in out.stdout + out.stderr
    a, b = weights(full, 4), weights(part, 4)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]

    # a two-process checkpoint does not resume in one process (per-rank state would be lost)
    cfg = build_config(dict(opts, steps=6))
    with pytest.raises(CheckpointError, match="written by 2 training processes"):
        train(cfg, part, resume=True, quiet=True)


def test_loader_workers_are_shared_by_the_processes_of_a_machine(monkeypatch):
    from translate.data.folders import default_workers

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    assert (default_workers(), default_workers(8)) == (8, 7)  # one core per training process, the rest shared
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert (default_workers(), default_workers(2)) == (1, 0)


def _failing_phase(rank: int, port: int, results) -> None:
    """One rank of a two-process Gloo group: rank 0 fails a rank-0-only step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    distributed.setup("cpu")
    try:
        def score():
            raise CheckpointError("cannot read /runs/x/step-00000004")

        distributed.on_main(score)
        results.put((rank, "no error"))
    except Exception as exc:  # noqa: BLE001
        results.put((rank, f"{type(exc).__name__}: {exc}"))
    finally:
        distributed.teardown()


def _spawn_two_ranks(target, *args):
    """Start ranks 0 and 1 of a two-process Gloo group on a free local port, each running
    ``target(rank, port, results, *args)``; returns the processes and the queue they report on."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, port, results, *args)) for r in range(2)]
    for p in procs:
        p.start()
    return procs, results


def test_a_failure_on_one_rank_stops_every_rank():
    """A step only rank 0 runs fails: rank 0 raises its own error, and rank 1, instead of waiting in
    the next collective until the timeout, raises one naming rank 0's failure."""
    procs, results = _spawn_two_ranks(_failing_phase)
    for p in procs:
        p.join(120)
    got = dict(results.get(timeout=5) for _ in procs)
    assert got[0] == "CheckpointError: cannot read /runs/x/step-00000004"
    assert got[1].startswith("DeviceError: rank 0 failed (CheckpointError: cannot read /runs/x/step-00000004)")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _leave_after_work(rank: int, port: int, results) -> None:
    """One rank of a two-process Gloo group that trains a little (collectives, torch._dynamo
    imported mid-run as torch.compile does) and leaves."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)
    before = _threads()
    distributed.setup("cpu")
    distributed.mean_over_ranks(torch.ones(3))
    importlib.import_module("torch._dynamo")  # imports torch.distributed.nn, whose defaults name the group

    distributed.on_main(lambda: None)
    during = _threads()
    distributed.teardown(finished=True)
    results.put((rank, before, during, _threads()))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_leaving_the_group_stops_its_threads():
    """After training, leaving the process group stops its worker threads there and then: left
    running into interpreter shutdown, one freeing the last collective's tensors aborted the process
    now and then ("terminate called without an active exception", exit -6 under torchrun)."""
    procs, results = _spawn_two_ranks(_leave_after_work)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = [results.get(timeout=5) for _ in procs]
    for rank, before, during, after in got:
        assert during > before and after == before, (rank, before, during, after)


def _failing_rank_0_setup(rank: int, port: int, results, run_dir: str, what: str) -> None:
    """One rank of a two-process Gloo group training for real, where rank 0 fails while setting up:
    drawing the sample batch, or writing the run's files."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    distributed.setup("cpu")
    try:
        from translate.data.folders import TranslationDataset
        from translate.errors import DataError
        from translate.run import Run

        if what == "sample_batch":
            original = TranslationDataset.sample_batch

            def sample_batch(self, n):
                if distributed.world().rank == 0:
                    raise DataError("cannot decode the sample images")
                return original(self, n)

            TranslationDataset.sample_batch = sample_batch
        else:
            def write_config(self, cfg):
                raise PermissionError(13, "Permission denied", str(self.config_path))

            Run.write_config = write_config
        cfg = build_config({"model": "pix2pix", "size": 32, "ngf": 8, "ndf": 8, "steps": 2, "workers": 0,
                            "synthetic_count": 8, "device": "cpu"})
        train(cfg, Path(run_dir), quiet=True)
        results.put((rank, "no error"))
    except Exception as exc:  # noqa: BLE001
        results.put((rank, f"{type(exc).__name__}: {exc}"))
    finally:
        distributed.teardown()


@pytest.mark.parametrize("what", ["sample_batch", "write_config"])
def test_a_rank_0_failure_in_training_set_up_stops_every_rank(tmp_path, what):
    """The sample batch and rank 0's writes run inside the all-ranks failure guard: rank 1 hears of
    rank 0's failure instead of waiting in the next collective for the 30-minute timeout."""
    import queue

    procs, results = _spawn_two_ranks(_failing_rank_0_setup, str(tmp_path / "run"), what)
    try:
        got = dict(results.get(timeout=150) for _ in procs)
    except queue.Empty:
        pytest.fail("a rank is still waiting for rank 0, which failed")
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert got[0].startswith("DataError: cannot decode" if what == "sample_batch" else "PermissionError")
    assert got[1].startswith("DeviceError: rank 0 failed")
