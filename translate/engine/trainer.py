"""The alternating GAN trainer, generic over model families (see ``models/base.py``).

One step = ``n_critic`` discriminator updates, each on a fresh batch, then one generator update on
the last batch with the discriminators frozen. The first discriminator update judges the fakes of
the previous generator step (see ``models/base.py``), so generators run once per step. Around that
the trainer owns the optimisers (Adam, or SGD for the discriminator), the constant-then-linear-decay
learning rate, autocast and gradient scaling, per-network gradient norms, an optional EMA of the
generators, past-checkpoint swaps, the health monitor, ``metrics.jsonl``, sample grids and
checkpoints. A resumed run reproduces the uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import CheckpointError, TrainingFailure
from ..fileio import atomic_write_text, json_safe
from . import distributed
from .checkpoint import load_checkpoint, recover_dir, save_checkpoint, write_checkpoint_dir
from .device import amp_dtype, rng_state, set_rng_state
from .memory import tune_malloc
from .monitor import HealthMonitor, HealthWarning
from .replay import PastSwaps

log = logging.getLogger("translate.train")

EVALS_FILE = "evals.jsonl"  # one row per --eval-every evaluation
BEST_DIR = "best"  # the checkpoint with the best eval_metric so far


def _step_of(line: str) -> float:
    """The step of a jsonl row; a blank or half-written row (a killed append) counts as past any step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def linear_decay(total_steps: int, decay_from: float) -> Callable[[int], float]:
    """Learning-rate factor: 1 until ``decay_from * total_steps``, then linear to 0 at the end."""
    start = int(total_steps * decay_from)
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, 1.0 - (step - start) / span)

    return factor


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class EMA:
    """Exponential moving average of the generators' weights (buffers are copied)."""

    def __init__(self, generators: nn.ModuleDict, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(generators).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generators: nn.ModuleDict) -> None:
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in generators.parameters()], 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), generators.buffers()):
            e.copy_(b)


class Trainer:
    def __init__(self, model: Any, cfg: Any, run_dir: str | Path, *, device: torch.device,
                 total_steps: int, loader_factory: Callable[[int], Iterator], sample_batch: dict | None = None,
                 quiet: bool = False, scorer: Callable[[nn.ModuleDict], dict] | None = None) -> None:
        t = cfg.train
        self.cfg, self.t = cfg, t
        self.world = distributed.world()
        self.run_dir = Path(run_dir)
        self.device = device
        self.total_steps = total_steps
        self.loader_factory = loader_factory
        self.quiet = quiet or not self.world.main
        self.model = model.to(device)
        distributed.broadcast_module(self.model)  # every rank starts from rank 0's weights
        if device.type == "cpu":
            tune_malloc()
        if device.type == "cuda":  # autotune convolutions for the fixed training shapes
            torch.backends.cudnn.benchmark = not torch.backends.cudnn.deterministic
        self.channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dtype = amp_dtype(t.amp, device)
        self.ema = EMA(self.model.generators, t.ema) if t.ema > 0 else None  # before SyncBN: it samples on rank 0
        synced = [self.model.generators]
        if getattr(self.model.adv, "kind", None) == "wgan-gp" and distributed.has_batchnorm(self.model.discriminators):
            if self.world.active and self.world.main:  # SyncBatchNorm's backward has no backward of its own
                log.warning("the discriminators keep per-rank batch norm: the WGAN-GP penalty needs a double "
                            "backward, which SyncBatchNorm lacks (or use --set norm=instance / d_norm=none)")
        else:
            synced.append(self.model.discriminators)
        self.sync_bn = distributed.sync_batchnorm(synced, device)
        if self.world.rank > 0:  # each rank replays its own past fakes
            for pool in self.model.pools.values():
                pool.generator.manual_seed(distributed.rank_seed(pool.generator.initial_seed(), self.world.rank))
        fused = device.type == "cuda"
        self.lr_factor = lr_factor(t.lr_scaling, self.world.size)
        self.opt_G = torch.optim.Adam(self.model.generators.parameters(), lr=t.lr * self.lr_factor,
                                      betas=(t.beta1, t.beta2), fused=fused or None)
        lr_d = (t.lr_d or t.lr) * self.lr_factor
        if t.d_optimizer == "sgd":
            self.opt_D = torch.optim.SGD(self.model.discriminators.parameters(), lr=lr_d, momentum=0.9)
        else:
            self.opt_D = torch.optim.Adam(self.model.discriminators.parameters(), lr=lr_d,
                                          betas=(t.beta1, t.beta2), fused=fused or None)
        decay = linear_decay(total_steps, t.decay_from)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.monitor = HealthMonitor(d_loss_keys=self.model.d_loss_keys, grad_limit=t.grad_limit)
        self.swaps = PastSwaps(t.swap_every, t.swap_steps, t.swap_history, seed=t.seed)
        self.sample_batch = sample_batch
        self.scorer = scorer  # --eval-every: generators -> {direction: {metric: value}} (rank 0's alone)
        self.evaluating = bool(distributed.from_main(scorer is not None))
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"} of the best evaluation so far
        self.step = 0
        self.data_position = 0  # samples drawn from the stream so far, by all ranks together
        self.fakes: dict[str, torch.Tensor] | None = None  # the last generator step's, for the next D step
        self.failure: str | None = None  # a health warning that stops the run (--stop-on-failure)
        if t.compile:
            self._compile()

    def _compile(self) -> None:
        """``--compile``: compile each network's forward in place (``nn.Module.compile``: weights,
        state dict and checkpoints are unchanged). A gradient penalty needs a double backward,
        which compiled graphs do not support, so WGAN-GP discriminators stay eager."""
        nets = dict(self.model.generators)
        if getattr(self.model.adv, "kind", None) == "wgan-gp":
            if self.world.main:
                log.warning("--compile: the discriminators stay eager (the WGAN-GP penalty's double backward "
                            "cannot run through a compiled graph)")
        else:
            nets.update(self.model.discriminators)
        eager = [name for name, net in nets.items() if any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())]
        if eager and self.world.main:  # torch.compile breaks its graph at every SyncBatchNorm
            log.warning("--compile: %s stay eager (synchronised batch norm splits compiled graphs)", ", ".join(eager))
        for name, net in nets.items():
            if name not in eager:
                net.compile()

    # --- state ---------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        w = dict(self.model.state_dict())
        if self.ema is not None:
            w.update({f"ema.{k}": v for k, v in self.ema.model.state_dict().items()})
        w.update(self.model.extra_state())
        w.update(self.swaps.tensors())
        if self.fakes is not None:
            w.update({f"fakes.{k}": v for k, v in self.fakes.items()})
        return w

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "data_position": self.data_position,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "warnings": [[w.step, w.code, w.short, w.message] for w in self.monitor.history],
            "swap": self.swaps.state(),
            "best": json.dumps(self.best),
        }

    def _rank_tensors(self) -> dict[str, torch.Tensor]:
        """What differs between ranks: replay buffers and the last generator step's fakes."""
        tensors = dict(self.model.extra_state())
        if self.fakes is not None:
            tensors.update({f"fakes.{k}": v for k, v in self.fakes.items()})
        return tensors

    def payload(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The weights and state of a checkpoint; with several ranks (a collective: every rank
        calls it), each rank's replay buffers, fakes and random states gathered on rank 0, which
        alone gets a result. Rank ``r`` > 0's tensors are stored under ``rank<r>.``."""
        mine = None
        if self.world.active:
            mine = {"rng": rng_state(), "tensors": {k: v.detach().cpu() for k, v in self._rank_tensors().items()}}
        everyone = distributed.gather_to_main(mine)
        if not self.world.main:
            return None
        weights, state = self.weights(), self.state()
        if self.world.active:
            for r, theirs in enumerate(everyone[1:], 1):
                weights.update({f"rank{r}.{k}": v for k, v in theirs["tensors"].items()})
            state["world"] = {"size": self.world.size, "rng": [theirs["rng"] for theirs in everyone[1:]]}
        return weights, state

    def save(self) -> Path | None:
        """Checkpoint (every rank calls it; rank 0 writes). Returns the folder on rank 0."""
        payload = self.payload()
        if payload is None:
            return None
        path = save_checkpoint(self.run_dir, self.step, *payload, keep_last=self.t.keep_last)
        log.debug("checkpoint %s", path)
        return path

    def resume(self, checkpoint: str | Path | None = None) -> Path:
        weights, state, path = distributed.everywhere(lambda: load_checkpoint(checkpoint or self.run_dir))
        saved_world = int(state.get("world", {}).get("size", 1))
        if saved_world != self.world.size:
            raise CheckpointError(
                f"{path} was written by {saved_world} training process{'es' * (saved_world > 1)} and this run has "
                f"{self.world.size}; each keeps its own replay buffer and random state, so resume with the same "
                f"number (torchrun --nnodes=... --nproc_per_node=... giving {saved_world} in all"
                f"{'' if saved_world > 1 else ', or without torchrun'})")
        if self.world.rank > 0:  # this rank's own replay buffers, fakes and random state
            prefix = f"rank{self.world.rank}."
            mine = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
            weights = {k: v for k, v in weights.items() if not k.startswith(("pool.", "fakes."))}
            weights.update(mine)
            state = {**state, "rng": state["world"]["rng"][self.world.rank - 1]}
        model_keys = set(self.model.state_dict())
        missing = model_keys - set(weights)
        if missing:
            raise CheckpointError(f"{path} does not match this model ({len(missing)} weights missing, e.g. "
                                  f"{sorted(missing)[0]}); was it written by another --model or config?")
        self.model.load_state_dict({k: weights[k] for k in model_keys})
        if self.ema is not None:
            ema_w = {k[4:]: v for k, v in weights.items() if k.startswith("ema.")}
            if ema_w:
                self.ema.model.load_state_dict(ema_w)
        self.model.load_extra_state({k: v for k, v in weights.items() if k.startswith("pool.")})
        self.fakes = {k[6:]: v.to(self.device) for k, v in weights.items() if k.startswith("fakes.")} or None
        self.swaps.load(state.get("swap"), weights, self.device)
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.sched_G.load_state_dict(state["sched_G"])
        self.sched_D.load_state_dict(state["sched_D"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.data_position = int(state["data_position"])
        self.monitor.history = [HealthWarning(*w) for w in state.get("warnings", [])]
        self.best = json.loads(state.get("best") or "null")
        if self.world.main:
            recover_dir(self.run_dir / BEST_DIR)
            self._truncate_metrics(self.step)
        distributed.barrier()
        return path

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric and evaluation rows a killed run wrote after its last checkpoint."""
        for name in ("metrics.jsonl", EVALS_FILE):
            path = self.run_dir / name
            if not path.exists():
                continue
            rows = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
            atomic_write_text(path, "".join(r + "\n" for r in rows))

    # --- one step ------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=nb)
                if self.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _backward(self, loss: torch.Tensor) -> None:
        """Back-propagate one (part of a) loss; gradients accumulate until the optimiser steps."""
        with torch.autocast(self.device.type, enabled=False):
            self.scaler.scale(loss).backward()

    def _phase(self, opt: torch.optim.Optimizer, nets: nn.ModuleDict, logs: dict[str, torch.Tensor],
               run: Callable[[Callable[[torch.Tensor], None]], Any], frozen: bool = False) -> Any:
        """Zero the gradients, let the model accumulate them, record their norms, step. A frozen
        side (a past snapshot playing, see ``PastSwaps``) only computes its losses."""
        if frozen:
            with torch.no_grad(), self._autocast():
                return run(lambda loss: None)
        opt.zero_grad(set_to_none=True)
        with self._autocast():
            result = run(self._backward)
        distributed.average_gradients(nets.values())  # several ranks: the gradient of the global batch
        self.scaler.unscale_(opt)
        norms = {f"grad_norm/{name}": grad_norm(net) for name, net in nets.items()}
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(opt)
        self.scaler.update()
        if scale is None or self.scaler.get_scale() >= scale:
            logs.update(norms)  # an fp16 overflow step is skipped by the scaler: not an explosion
        return result

    def train_step(self, batches: Iterator[dict]) -> dict[str, torch.Tensor]:
        model = self.model
        model.set_schedule(self.step, self.total_steps, self.t.instance_noise_steps)
        frozen = self.swaps.before_step(self.step, model)
        logs: dict[str, torch.Tensor] = {}
        for i in range(self.t.n_critic):
            batch = self._to_device(next(batches))
            self.data_position += self.t.batch_size * self.world.size
            if frozen == "D":  # a past discriminator plays: it is not trained
                continue
            fakes = self.fakes if i == 0 else None
            logs.update(self._phase(self.opt_D, model.discriminators, logs,
                                    lambda backward: model.discriminator_loss(batch, fakes, backward)))
            model.after_discriminator_step()
        model.discriminators.requires_grad_(False)
        try:
            g_logs, self.fakes = self._phase(self.opt_G, model.generators, logs,
                                             lambda backward: model.generator_loss(batch, backward),
                                             frozen=frozen == "G")
        finally:
            model.discriminators.requires_grad_(True)
        logs.update(g_logs)
        if self.ema is not None and frozen != "G":
            self.ema.update(model.generators)
        with warnings.catch_warnings():  # fp16: the scaler skips overflowing steps; the schedule counts steps
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.sched_G.step()
            self.sched_D.step()
        self.step += 1
        return logs

    # --- outputs -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _judged(self) -> Iterator[nn.ModuleDict]:
        """The generators worth looking at (the EMA ones when kept, with their own batch-norm
        statistics), in eval mode, as ``model.generators``, without touching training state (RNG,
        the live networks' BN statistics)."""
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = self.model.training
        live = self.model.generators
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.t.seed)
            self.model.eval()
            if self.ema is not None:
                if hasattr(self.model, "refresh_norm_stats"):
                    for net in self.ema.model.values():
                        self.model.refresh_norm_stats(net, seed=self.t.seed)
                self.model.generators = self.ema.model
            try:
                yield self.model.generators
            finally:
                self.model.generators = live
                self.model.train(was_training)

    def samples(self) -> dict[str, torch.Tensor] | None:
        """The sample rows for the fixed batch (from the EMA generators when there are)."""
        if self.sample_batch is None:
            return None
        with self._judged(), self._autocast():
            rows = self.model.sample(self._to_device(self.sample_batch))
        return {k: v.float().cpu() for k, v in rows.items()}

    def evaluate(self) -> dict[str, Any] | None:
        """``--eval-every``: score the judged generators, log the scores to ``evals.jsonl``, and
        keep the best checkpoint by ``eval_metric`` in ``RUN/best/``. With several ranks, rank 0
        scores while the others wait, and all take part in writing a new best."""
        row = distributed.on_main(self._score)  # a failure while scoring stops every rank
        if distributed.from_main(row is not None and row["best"]):
            self.best = distributed.from_main(self.best)
            payload = self.payload()
            if payload is not None:
                write_checkpoint_dir(self.run_dir / BEST_DIR, *payload,
                                     extra={"best.json": json.dumps(json_safe(self.best), indent=2) + "\n"})
        return row

    def _score(self) -> dict[str, Any]:
        from ..evaluate import metric_value
        from ..metrics import METRIC

        started = time.perf_counter()
        with self._judged() as generators:
            results = self.scorer(generators)
        metric = self.t.eval_metric
        value = metric_value(results, metric)
        judge = METRIC[metric]
        if self.best is not None and self.best["metric"] != metric:  # --eval-metric changed on resume
            self.best = None
        better = not math.isnan(value) and (self.best is None or judge.better(value, self.best["value"]))
        row = {"step": self.step, "metric": metric, "value": value, "best": better,
               "results": {d: {k: v for k, v in r.items() if k not in ("per_image", "per_class_accuracy",
                                                                     "per_class_classifier_fd")}
                           for d, r in results.items()},
               "seconds": round(time.perf_counter() - started, 2)}
        with open(self.run_dir / EVALS_FILE, "a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")
        log.info("eval at step %d: %s %.4g%s", self.step, metric, value, " (best so far)" if better else "")
        if better:
            self.best = {"metric": metric, "value": value, "step": self.step}
        return row

    def write_samples(self, rows: dict[str, torch.Tensor]) -> Path:
        from ..report import save_grid

        return save_grid(rows, self.run_dir / "samples" / f"step-{self.step:08d}.png")

    def _log_row(self, sums: dict[str, list[torch.Tensor]], elapsed: float, steps: int) -> dict[str, float]:
        """One row of ``metrics.jsonl``: losses averaged over the steps since the last row (and over
        the ranks: the global batch's), the largest gradient norms, the learning rate, the speed.
        Every rank calls it; rank 0 writes."""
        keys = sorted(sums)
        stacked = [torch.stack([x.detach().float().to(self.device) for x in sums[k]]) for k in keys]
        values = torch.stack([v.max() if k.startswith("grad_norm/") else v.mean() for k, v in zip(keys, stacked)]) \
            if keys else torch.zeros(0, device=self.device)
        values = distributed.mean_over_ranks(values).cpu()
        row: dict[str, float] = {"step": self.step}
        row.update({k: float(v) for k, v in zip(keys, values)})
        row["lr"] = self.sched_G.get_last_lr()[0]
        row["it_per_s"] = steps / elapsed if elapsed > 0 else float("nan")
        if self.world.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        return row

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_at``, keeping the full schedule), checkpointing as
        configured. Ctrl-C saves a checkpoint and stops cleanly. Returns a summary."""
        from tqdm.auto import tqdm

        t = self.t
        end = min(self.total_steps, stop_at) if stop_at is not None else self.total_steps
        self.model.train()
        batches = iter(self.loader_factory(self.data_position))
        bar = tqdm(total=self.total_steps, initial=self.step, disable=self.quiet, unit="it", dynamic_ncols=True,
                   desc="train", smoothing=0.1)
        sums: dict[str, list[torch.Tensor]] = {}
        last_time, last_step = time.perf_counter(), self.step
        stop_requested: list[int] = []

        def request_stop(signum, frame):  # finish the step in progress, checkpoint, stop
            if stop_requested:  # a second Ctrl-C: stop at once, without a checkpoint
                raise KeyboardInterrupt
            stop_requested.append(signum)
            log.warning("stopping after step %d (saving a checkpoint); press Ctrl-C again to abort", self.step + 1)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
                previous[sig] = signal.signal(sig, request_stop)
        main = self.world.main
        stop = False
        try:
            while self.step < end and not stop:
                logs = self.train_step(batches)
                for k, v in logs.items():
                    sums.setdefault(k, []).append(v)
                bar.update(1)
                stop = distributed.any_rank(bool(stop_requested))  # all ranks stop after the same step
                if self.step % t.log_every == 0 or self.step == end or stop:
                    now = time.perf_counter()
                    row = self._log_row(sums, now - last_time, self.step - last_step)
                    sums, last_time, last_step = {}, now, self.step
                    if main:
                        self._report(self.monitor.check_losses(self.step, row))
                        bar.set_postfix_str(self._postfix(row), refresh=False)
                    self._stop_if_failed()
                # a stopping step checkpoints at once (torchrun kills its processes 30 s after a signal)
                if not stop and (self.step % t.sample_every == 0 or self.step == self.total_steps):
                    distributed.on_main(self._sample_and_check)
                    self._stop_if_failed()
                if not stop and self.evaluating and t.eval_every and (self.step % t.eval_every == 0
                                                                      or self.step == self.total_steps):
                    self.evaluate()
                if self.step % t.checkpoint_every == 0 or self.step == end or stop:
                    self.save()
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        interrupted = stop and self.step < end
        return {"step": self.step, "total_steps": self.total_steps, "interrupted": interrupted,
                "warnings": [str(w) for w in self.monitor.history]}

    def _sample_and_check(self) -> None:
        """Write the sample grid of this step and let the monitor judge its diversity (rank 0)."""
        rows = self.samples()
        if rows is None:
            return
        self.write_samples(rows)
        for key, fake in rows.items():
            if key.startswith("fake_") and f"real_{key[5:]}" in rows:
                self._report(self.monitor.check_samples(self.step, fake, rows[f"real_{key[5:]}"], name=key[5:]))

    def _stop_if_failed(self) -> None:
        """``--stop-on-failure``: after a failure (seen by rank 0's monitor), every rank saves this
        step's checkpoint and stops."""
        if distributed.any_rank(self.failure is not None):
            self.save()
            raise TrainingFailure(distributed.from_main(self.failure))

    def _postfix(self, row: dict[str, float]) -> str:
        parts = [f"{k.removeprefix('loss_')}={v:.3f}" for k, v in row.items() if k.startswith("loss")]
        active = [w.short for w in self.monitor.active.values()]
        if active:
            parts.append("⚠ " + ", ".join(active))
        return " ".join(parts)

    def _report(self, new: list[HealthWarning]) -> None:
        """Log new health warnings; with ``--stop-on-failure`` the first one stops the run (after
        this step's checkpoint, on every rank)."""
        for w in new:
            log.warning("%s", w)
            if self.t.stop_on_failure and self.failure is None:
                self.failure = (f"stopped at step {w.step} (--stop-on-failure): {w.message} "
                                f"The last checkpoint is in {self.run_dir}.")


def lr_factor(scaling: str, world_size: int) -> float:
    """``--lr-scaling``: what the learning rates are multiplied by with ``world_size`` ranks, each
    with its own ``batch_size``: ``none`` 1, ``linear`` the world size (Goyal et al. 2017), ``sqrt``
    its square root (the rule for Adam-like optimisers)."""
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[scaling]


def total_steps_for(t: Any, samples_per_epoch: int, default_epochs: int = 200, world_size: int = 1) -> int:
    """``--steps`` if given, else epochs (default 200, the reference's 100 + 100) of the data, with
    ``world_size`` ranks each drawing ``batch_size`` samples per discriminator step."""
    if t.steps:
        return t.steps
    per_step = t.batch_size * t.n_critic * world_size
    return (t.epochs or default_epochs) * max(1, math.ceil(samples_per_epoch / per_step))
