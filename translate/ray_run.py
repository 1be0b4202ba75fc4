"""``translate run --ray``: the batch translation of ``runtime.run_jobs`` on a Ray cluster, built on
Ray Data. No scheduler, queue or worker protocol of our own: Ray Data streams the jobs through

    the job plan (runtime.plan_jobs, on the driver: the same refusals as the local run)
    -> decode          tasks, as many as the cluster's free CPUs allow (or --workers)
    -> translate       an actor pool (--actors N or MIN:MAX): each actor holds one onnxruntime
                       session, loaded once; CUDA / TensorRT when the actor has a GPU
    -> encode + write  tasks: atomic writes (temp file + rename)

and the driver only counts the results. Decoding, padding, tiling, the per-file noise seeds and
encoding are runtime.py's own functions, so outputs equal the local run's. An actor that dies is
restarted by Ray and its batch retried (``max_restarts`` / ``max_task_retries``); a retried batch
finds the outputs an earlier attempt wrote and leaves them as they are, so each output is written
once. The model travels through Ray's object store, so only INPUT and OUT must be reachable from
every node (docs/scaling.md). Imports no torch.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, TranslateError
from .runtime import Job, RunSummary, Translator, decode, encode, split_alpha, translate_or_split, unreadable

log = logging.getLogger("translate.run")

EXTRA = "pip install 'translate[ray]'"
IO_TASK_CPUS = 0.5  # Ray's CPU accounting of a decode or write task
INTERRUPT_GRACE_S = 20.0  # after a Ctrl-C, how long Ray may take to wind the job down before we leave anyway


class RayJobError(TranslateError):
    """The cluster could not be reached or the job could not run on it."""


def import_ray():
    """The ``ray`` module with Ray Data, or a one-line error naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home unless the user asks
    try:
        import ray
        import ray.data  # the extra is ray[data]: pandas, pyarrow
    except ImportError as exc:
        raise RayJobError(f"--ray needs Ray Data, which is not installed here ({exc.name or exc}): {EXTRA}") \
            from None
    return ray


def parse_actors(text: str | None) -> tuple[int, int] | None:
    """``--actors``: ``N`` (a fixed pool) or ``MIN:MAX`` (autoscaling); None: the default."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        lo, hi = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        lo = hi = -1
    if len(parts) > 2 or lo < 1 or hi < lo:
        raise ConfigError(f"--actors takes N or MIN:MAX with 1 <= MIN <= MAX (e.g. 4 or 1:8), not {text!r}")
    return lo, hi


def check_options(address: str, actors: str | None = None, gpus_per_actor: float | None = None,
                  provider: str = "auto") -> tuple[int, int] | None:
    """The --ray options, checked before any work (and Ray importable); returns the actor pool."""
    if address not in ("auto", "local") and ":" not in address:
        raise ConfigError(f"--ray takes auto, local or a cluster address HOST:PORT (or ray://HOST:PORT), not "
                          f"{address!r}; give --ray after INPUT OUT")
    pool = parse_actors(actors)
    if gpus_per_actor is not None and gpus_per_actor < 0:
        raise ConfigError(f"--gpus-per-actor must be 0 or more, not {gpus_per_actor:g}")
    if gpus_per_actor == 0 and provider in ("cuda", "tensorrt"):
        raise ConfigError(f"--provider {provider} needs GPU actors; give --gpus-per-actor (e.g. 1, or 0.5 for two "
                          f"actors per GPU)")
    import_ray()
    return pool


# --- the cluster -------------------------------------------------------------------------------
@dataclass
class Cluster:
    address: str
    started: bool  # a local cluster started for this job (shut down with it)
    owned: bool  # this call connected (and disconnects at the end); False: the caller's session
    seconds: float  # connecting (and starting) took this long
    nodes: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        how = "started a local Ray cluster" if self.started else f"joined the Ray cluster at {self.address}"
        return (f"{how} in {self.seconds:.1f} s: {self.nodes} node(s), {self.cpus:g} CPU(s), "
                f"{self.gpus:g} GPU(s)")


def _alive_nodes(ray) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def connect(address: str = "auto") -> Cluster:
    """Join a Ray cluster. ``auto``: the one ``RAY_ADDRESS`` or ``ray start`` on this machine names,
    else a new local one; ``local``: always a new local one; else ``HOST:PORT`` / ``ray://HOST:PORT``.
    A session the caller has already opened (``ray.init`` in the same process) is used as it is."""
    ray = import_ray()
    start = time.perf_counter()
    started, owned = False, True
    if ray.is_initialized():
        owned = False
    else:
        # the workers' own output (tracebacks of a failed actor, Ray's retry notes) stays in the
        # cluster's logs unless --debug: a failure reaches the user as one line from here
        quiet = {"logging_level": logging.WARNING, "log_to_driver": log.isEnabledFor(logging.DEBUG)}
        try:
            if address == "local":
                raise ConnectionError
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            if address not in ("auto", "local") or os.environ.get("RAY_ADDRESS"):  # a cluster was named
                address = address if address != "auto" else os.environ["RAY_ADDRESS"]
                raise RayJobError(f"cannot reach the Ray cluster at {address} ({str(exc).splitlines()[0][:160]}); "
                                  f"start it with 'ray start --head' or check the address (a cluster with token "
                                  f"authentication also needs RAY_AUTH_MODE=token and its token: RAY_AUTH_TOKEN or "
                                  f"~/.ray/auth_token), or use --ray local") from None
            log.info("no running Ray cluster found; starting a local one for this job")
            ray.init(address="local", include_dashboard=False, **quiet)
            started = True
        except Exception as exc:  # noqa: BLE001 - a bad address, a version mismatch, ...
            raise RayJobError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0][:200]}") \
                from None
    nodes = _alive_nodes(ray)
    res = ray.cluster_resources()
    ctx = ray.get_runtime_context()
    gcs = getattr(ctx, "gcs_address", None) or address
    return Cluster(address=gcs, started=started, owned=owned, seconds=time.perf_counter() - start,
                   nodes=len(nodes), cpus=float(res.get("CPU", 0)), gpus=float(res.get("GPU", 0)))


def check_paths(ray, jobs: Sequence[Job], out: Path, min_nodes: int = 2) -> None:
    """On a cluster of several machines (``min_nodes`` or more), ask each one whether it sees an
    input and can write under OUT: a cluster without a shared filesystem fails here with one line,
    not once per image."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def probe(src: str, folder: str) -> str:
        import socket

        if not os.path.exists(src):
            return f"{socket.gethostname()} cannot see {src}"
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            return f"{socket.gethostname()} cannot create {folder} ({exc.strerror})"
        if not os.access(folder, os.W_OK):
            return f"{socket.gethostname()} cannot write to {folder}"
        return ""

    nodes = _alive_nodes(ray)
    if len(nodes) < min_nodes:
        return
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(jobs[0].src.resolve()), str(out.resolve())) for n in nodes]
    problems = [p for p in ray.get(refs, timeout=120) if p]
    if problems:
        raise RayJobError(f"{problems[0]}; every machine of the cluster must reach INPUT and OUT at the same path: "
                          f"put them on a shared filesystem (NFS, Lustre, EFS, a gcsfuse mount, ...; "
                          f"docs/scaling.md)")


# --- the three stages --------------------------------------------------------------------------
# Images travel between stages as raw bytes plus their shape (Arrow binary columns), so images of
# any size, RGB or RGBA, share one batch.
def _array(pixels: bytes, h: int, w: int, c: int) -> np.ndarray:
    return np.frombuffer(pixels, dtype=np.uint8).reshape(int(h), int(w), int(c))


def decode_batch(batch: dict[str, np.ndarray], resize: int | None = None) -> dict[str, np.ndarray]:
    """Stage 1 (tasks): read and decode each file; a file that does not decode carries its error on."""
    pixels, shapes, errors = [], [], []
    for src in batch["src"]:
        try:
            a = decode(Path(str(src)), resize)
        except Exception as exc:  # noqa: BLE001 - corrupt, empty, a folder: reported by name, skipped
            pixels.append(b"")
            shapes.append((0, 0, 0))
            errors.append(unreadable(exc))
            continue
        pixels.append(a.tobytes())
        shapes.append(a.shape)
        errors.append("")
    h, w, c = (np.array(s, dtype=np.int32) for s in zip(*shapes))
    return {"src": batch["src"], "dst": batch["dst"], "key": batch["key"], "pixels": _objects(pixels),
            "h": h, "w": w, "c": c, "error": np.array(errors, dtype=object)}


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _model_file(data: bytes, name: str) -> Path:
    """The model, written once per machine into its cache (``$TRANSLATE_CACHE`` or
    ~/.cache/translate, under ray-models/; TensorRT caches its engines beside it), so no node
    needs the driver's filesystem to load it."""
    from .fileio import atomic_path, cache_dir

    digest = hashlib.sha256(data).hexdigest()[:16]
    path = cache_dir() / "ray-models" / f"{digest}-{Path(name).name}"
    if not path.is_file() or path.stat().st_size != len(data):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return path


def _node_cpus(ray) -> float:
    node = ray.get_runtime_context().get_node_id()
    for n in _alive_nodes(ray):
        if n["NodeID"] == node:
            return float(n["Resources"].get("CPU", 1))
    from .runtime import cpu_count

    return float(cpu_count())


class TranslateActor:
    """Stage 2 (an actor pool): one onnxruntime session per actor, loaded once, translating batches
    of images (equal shapes batched together, at most ``batch_size`` per inference)."""

    def __init__(self, model: Any, name: str, *, provider: str = "auto", seed: int | None = None,
                 tile: int = 1024, batch_size: int = 4, actors_per_node: int = 1) -> None:
        import ray

        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model  # nested in Ray Data's args: not resolved
        on_gpu = bool(ray.get_gpu_ids())
        if provider == "auto" and not on_gpu:
            provider = "cpu"  # a GPU this actor was not given belongs to another actor
        # a CPU actor runs onnxruntime on its share of its machine's cores, as the local run does on
        # all of them; decoding and writing tasks overlap with it there
        threads = None if on_gpu else max(1, int(_node_cpus(ray)) // max(1, actors_per_node))
        self.error: TranslateError | None = None
        try:
            self.translator = Translator(_model_file(data, name), provider=provider, threads=threads, seed=seed,
                                         tile=tile, batch_size=batch_size)
        except TranslateError as exc:  # e.g. no CUDA libraries on this machine
            # raised by the first batch instead: Ray Data then ends the job with this one line (an
            # actor that fails to start has its traceback printed by Ray on the driver)
            self.error = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        n = len(batch["src"])
        pixels, errors = list(batch["pixels"]), [str(e) for e in batch["error"]]
        c = np.array(batch["c"], dtype=np.int32)
        groups: dict[tuple[int, int], list[int]] = {}
        arrays: dict[int, np.ndarray] = {}
        for i in range(n):
            if not errors[i]:
                arrays[i] = _array(pixels[i], batch["h"][i], batch["w"][i], batch["c"][i])
                groups.setdefault(arrays[i].shape[:2], []).append(i)
        size = self.translator.batch_size
        for idx in groups.values():
            for j in range(0, len(idx), size):
                part = idx[j: j + size]
                outs = translate_or_split(self.translator, [arrays[i][..., :3] for i in part],
                                          [str(batch["key"][i]) for i in part])
                for i, out in zip(part, outs):
                    if isinstance(out, str):
                        pixels[i], errors[i] = b"", out
                        continue
                    alpha = split_alpha(arrays[i])[1]
                    pixels[i] = (out if alpha is None else np.dstack([out, alpha])).tobytes()
        return {"src": batch["src"], "dst": batch["dst"], "pixels": _objects(pixels), "h": batch["h"],
                "w": batch["w"], "c": c, "error": np.array(errors, dtype=object)}


def write_batch(batch: dict[str, np.ndarray], overwrite: bool = False) -> dict[str, np.ndarray]:
    """Stage 3 (tasks): encode and write each output atomically. An output that is already there
    was written by an earlier attempt of a retried batch (the plan left out those present before the
    job, unless --overwrite): it is kept, so every output is written once."""
    errors = []
    for i, dst in enumerate(batch["dst"]):
        error = str(batch["error"][i])
        if not error:
            target = Path(str(dst))
            try:
                if overwrite or not target.exists():
                    rgb, alpha = split_alpha(_array(batch["pixels"][i], batch["h"][i], batch["w"][i], batch["c"][i]))
                    encode(rgb, target, alpha)
            except Exception as exc:  # noqa: BLE001 - disk full, permissions: reported per file
                error = f"cannot write {target}: {exc}"
        errors.append(error)
    return {"src": batch["src"], "error": np.array(errors, dtype=object)}


# --- the job -----------------------------------------------------------------------------------
def run_on_ray(jobs: list[Job], model: str | Path, *, address: str = "auto", actors: str | None = None,
               gpus_per_actor: float | None = None, batch_size: int = 4, resize: int | None = None,
               provider: str = "auto", tile: int = 1024, seed: int | None = None, overwrite: bool = False,
               workers: int | None = None, progress: bool = True) -> RunSummary:
    """Translate ``jobs`` (from ``plan_jobs``) on a Ray cluster; the counterpart of ``run_jobs``.
    Outputs already present are skipped (unless ``overwrite``) before the cluster is even joined."""
    pool = check_options(address, actors, gpus_per_actor, provider)
    ray = import_ray()
    # the model and options are checked here, once, rather than by every actor of the cluster
    Translator(model, provider="cpu", threads=1, seed=seed, tile=tile, batch_size=batch_size)

    summary = RunSummary()
    todo = [j for j in jobs if overwrite or not j.dst.exists()]
    summary.skipped = len(jobs) - len(todo)
    if not todo:
        return summary

    cluster = connect(address)
    try:
        log.info("%s", cluster.describe())
        _run(ray, cluster, todo, summary, Path(model), pool=pool, gpus_per_actor=gpus_per_actor,
             batch_size=batch_size, resize=resize, provider=provider, tile=tile, seed=seed, overwrite=overwrite,
             workers=workers, progress=progress)
    except KeyboardInterrupt:
        exit_if_stuck(130, INTERRUPT_GRACE_S)
        raise
    finally:
        if cluster.owned:
            ray.shutdown()  # a local cluster started here stops with it; a joined one stays up
    return summary


def exit_if_stuck(code: int, seconds: float) -> None:
    """After a Ctrl-C, give the winding down (Ray Data's executor stopping its tasks and actors,
    ``ray.shutdown``, Ray's exit handlers) ``seconds``; past that the process ends anyway with
    ``code``: a worker blocked in a read that never returns must not keep the user's terminal. Every
    output is written by rename, so ending here leaves no partial file, and the next run of the same
    job does only what is missing."""
    def leave() -> None:
        sys.stderr.write(f"interrupted (Ray had not wound the job down after {seconds:g} s; leaving it to the "
                         f"cluster)\n")
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()


def _run(ray, cluster: Cluster, todo: list[Job], summary: RunSummary, model: Path, *, pool: tuple[int, int] | None,
         gpus_per_actor: float | None, batch_size: int, resize: int | None, provider: str, tile: int,
         seed: int | None, overwrite: bool, workers: int | None, progress: bool) -> None:
    from ray.data import DataContext
    from tqdm.auto import tqdm

    gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if cluster.gpus > 0 else 0.0)
    if gpus > 0 and cluster.gpus == 0:
        raise RayJobError(f"--gpus-per-actor {gpus:g}: the Ray cluster at {cluster.address} has no GPUs; start "
                          f"GPU nodes (ray start --num-gpus N) or use --gpus-per-actor 0")
    if gpus == 0 and provider in ("cuda", "tensorrt"):
        raise ConfigError(f"--provider {provider} needs GPU actors, and this cluster has no GPUs; use --provider "
                          f"cpu or auto")
    if pool is None:  # every GPU busy, or one actor per machine using its cores
        n = max(1, int(cluster.gpus // gpus)) if gpus else max(1, cluster.nodes)
        pool = (n, n)
    if gpus and pool[0] * gpus > cluster.gpus:
        log.warning("%d actor(s) x %g GPU(s) is more than the cluster's %g GPU(s): the job waits for GPUs",
                    pool[0], gpus, cluster.gpus)
    check_paths(ray, todo, todo[0].dst.parent)
    log.info("%d image(s) on %s actor(s) (%s), batch %d", len(todo),
             pool[0] if pool[0] == pool[1] else f"{pool[0]}-{pool[1]}",
             f"{gpus:g} GPU each" if gpus else "CPU", batch_size)

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the bar below counts written images
    ctx.print_on_execution_start = False
    if not log.isEnabledFor(logging.DEBUG):
        # Ray Data's own lines (kept in its log file, ray-data.log) would tear the progress bar, and
        # an error among them is reported as one line by _one_line
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)

    rows = [{"src": str(j.src), "dst": str(j.dst), "key": j.key} for j in todo]
    # Blocks of one or two batches (fewer images when there are few, so that every CPU decodes):
    # an actor hands its output on block by block, so small blocks stream to the writers soon
    # and spread the last images of a job evenly over the actors.
    per_block = max(1, min(2 * batch_size, math.ceil(len(rows) / (4 * max(1.0, cluster.cpus)))))
    data = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
    # decode and write tasks reserve half a CPU each: short, partly waiting on storage, they run beside
    # the actors as the local run's I/O threads run beside onnxruntime (and, reserving other
    # resources than a CPU actor, they are not fused into it: decoding scales with the CPUs)
    tasks = ray.data.TaskPoolStrategy(size=workers) if workers else None
    data = data.map_batches(decode_batch, fn_kwargs={"resize": resize}, batch_size=None, batch_format="numpy",
                            compute=tasks, num_cpus=IO_TASK_CPUS)
    # Ray Data gives an actor pool max_restarts=-1 and max_task_retries=-1: an actor that dies is
    # replaced and the batches it held are run again (tests/test_ray_run.py kills one mid-job)
    data = data.map_batches(
        TranslateActor, batch_size=batch_size, batch_format="numpy",
        fn_constructor_args=(ray.put(model.read_bytes()), model.name),
        fn_constructor_kwargs={"provider": provider, "seed": seed, "tile": tile, "batch_size": batch_size,
                               "actors_per_node": max(1, math.ceil(pool[1] / max(1, cluster.nodes)))},
        compute=ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1]), num_cpus=1, num_gpus=gpus or None)
    data = data.map_batches(write_batch, fn_kwargs={"overwrite": overwrite}, batch_size=None, batch_format="numpy",
                            compute=tasks, num_cpus=IO_TASK_CPUS)

    bar = tqdm(total=len(todo), unit="img", desc="translate (ray)", disable=not progress, dynamic_ncols=True)
    seen: set[str] = set()
    start = time.perf_counter()
    try:
        for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
            for src, error in zip(batch["src"], batch["error"]):
                src = str(src)
                if src in seen:  # a retried batch reported twice: once is what happened
                    continue
                seen.add(src)
                if error:
                    summary.failed.append((Path(src), str(error)))
                else:
                    summary.done += 1
            bar.update(len(seen) - bar.n)
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - start, 1e-9):.2f} img/s", refresh=False)
    except ray.exceptions.RayError as exc:
        raise _one_line(exc) from None
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    summary.failed.sort(key=lambda f: str(f[0]))


def _one_line(exc: BaseException) -> TranslateError:
    """A failure inside the cluster (an actor that cannot load the model, ...) as one line: the
    TranslateError it carries. An exception crosses from a worker as its traceback's text (its
    cause is not pickled with it), so the text is searched too: the last ``translate.*Error: ...``
    line, else the last ``SomeError: ...`` line, else the last line."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TranslateError):
            return e
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    text = str(exc)
    ours = re.findall(r"^\s*translate\.[\w.]*?(\w+Error): (.+)$", text, re.M)
    if ours:
        return RayJobError(ours[-1][1].strip())
    errors = re.findall(r"^\s*([\w.]+(?:Error|Exception)): (.+)$", text, re.M)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    what = f"{errors[-1][0]}: {errors[-1][1]}" if errors else lines[-1] if lines else type(exc).__name__
    return RayJobError(f"the Ray job failed: {what.strip()[:300]} (--debug shows more; the workers' logs are in "
                       f"/tmp/ray/session_latest/logs)")
