"""The alternating GAN trainer, generic over model families (see ``models/base.py``).

One step = ``n_critic`` discriminator updates, each on a fresh batch, then one generator update on
the last batch with the discriminators frozen. The first discriminator update judges the fakes of
the previous generator step (see ``models/base.py``), so generators run once per step. The trainer
owns the optimisers (Adam, or SGD for the discriminator), the constant-then-linear-decay learning
rate, autocast and gradient scaling, per-network gradient norms, an optional EMA of the
generators, past-checkpoint swaps, the health monitor and the loop. What is written and when comes
in as pieces: a :class:`~.state.Checkpointer`, a :class:`~.logs.MetricsLog`, an
:class:`~.best.Evaluation` and an ``on_samples`` callback. A resumed run reproduces the
uninterrupted one.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import TrainingFailure
from . import distributed
from .best import Evaluation
from .device import amp_dtype
from .ema import EMA
from .guard import NanGuard
from .logs import MetricsLog
from .memory import tune_malloc
from .monitor import HealthMonitor, HealthWarning
from .replay import PastSwaps
from .schedule import linear_decay, lr_factor
from .state import Checkpointer, restore, state_of, weights_of

log = logging.getLogger("translate.train")

Samples = dict[str, torch.Tensor]


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class Trainer:
    def __init__(self, model: Any, cfg: Any, *, device: torch.device, total_steps: int,
                 loader_factory: Callable[[int], Iterator] | None = None, sample_batch: dict | None = None,
                 quiet: bool = False, checkpoints: Checkpointer | None = None, metrics: MetricsLog | None = None,
                 evaluation: Evaluation | None = None, on_samples: Callable[[int, Samples], None] | None = None) -> None:
        t = cfg.train
        self.cfg, self.t = cfg, t
        self.world = distributed.world()
        self.device, self.total_steps, self.loader_factory = device, total_steps, loader_factory
        self.quiet = quiet or not self.world.main
        self.checkpoints, self.metrics = checkpoints, metrics or MetricsLog()
        self.sample_batch, self.on_samples = sample_batch, on_samples
        self.evaluation = evaluation if distributed.from_main(evaluation is not None) else None
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
        # SyncBatchNorm has no double backward: discriminators that need one keep per-rank statistics
        synced = [self.model.generators] + ([] if self.model.needs_double_backward else [self.model.discriminators])
        self.sync_bn = distributed.sync_batchnorm(synced, device)
        if self.world.rank > 0:  # each rank replays its own past fakes
            for pool in self.model.pools.values():
                pool.generator.manual_seed(distributed.rank_seed(pool.generator.initial_seed(), self.world.rank))
        self.guard = NanGuard(t.on_nan)
        self.g_nets = self.model.generator_side()  # what the generator phase trains (models/base.py)
        self._build_optimisers()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.monitor = HealthMonitor(d_loss_keys=self.model.d_loss_keys, grad_limit=t.grad_limit)
        self.swaps = PastSwaps(t.swap_every, t.swap_steps, t.swap_history, seed=t.seed)
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"} of the best evaluation so far
        self.step = 0
        self.data_position = 0  # samples drawn from the stream so far, by all ranks together
        self.fakes: dict[str, torch.Tensor] | None = None  # the last generator step's, for the next D step
        self.failure: str | None = None  # a health warning that stops the run (--stop-on-failure)
        self._finite = torch.ones((), dtype=torch.bool, device=device)  # every loss since the last check
        self._start: tuple | None = None  # the state at step 0: what a NaN before any checkpoint rolls back to
        self.train_seconds = 0.0  # wall-clock spent training (scoring by --eval-every not counted); checkpointed
        self._scoring = 0.0  # seconds spent scoring since the last step
        if t.compile:
            self._compile()

    def _build_optimisers(self) -> None:
        t, discs = self.t, self.model.discriminators
        fused = self.device.type == "cuda" or None
        self.lr_factor = lr_factor(t.lr_scaling, self.world.size)
        self.opt_G = torch.optim.Adam([p for net in self.g_nets.values() for p in net.parameters()],
                                      lr=t.lr * self.lr_factor, betas=(t.beta1, t.beta2), fused=fused)
        lr_d = (t.lr_d or t.lr) * self.lr_factor
        if t.d_optimizer == "sgd":
            self.opt_D = torch.optim.SGD(discs.parameters(), lr=lr_d, momentum=0.9)
        else:
            self.opt_D = torch.optim.Adam(discs.parameters(), lr=lr_d, betas=(t.beta1, t.beta2), fused=fused)
        decay = linear_decay(self.total_steps, t.decay_from)
        self._lr_at = lambda step: decay(step) * self.guard.lr_factor(step)  # noqa: E731 (the NaN guard may lower it)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, self._lr_at)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, self._lr_at)

    def _compile(self) -> None:
        """``--compile``: compile each network's forward in place (``nn.Module.compile``: weights,
        state dict and checkpoints are unchanged). A gradient penalty needs a double backward,
        which compiled graphs do not support, so such discriminators stay eager."""
        nets = dict(self.model.generators)
        if self.model.needs_double_backward:
            if self.world.main:
                log.warning("--compile: the discriminators stay eager (the gradient penalty's double backward "
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
    def resume(self) -> Any:
        """Continue from the newest good checkpoint; None when there is none yet (start at step 0)."""
        return self.checkpoints.resume(self)

    def save(self) -> Any:
        if self.checkpoints is None:
            return None
        self._start = None  # a NaN from now on rolls back to a checkpoint
        return self.checkpoints.save(self)

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
            g_logs, self.fakes = self._phase(self.opt_G, self.g_nets, logs,
                                             lambda backward: model.generator_loss(batch, backward),
                                             frozen=frozen == "G")
        finally:
            model.discriminators.requires_grad_(True)
        logs.update(g_logs)
        logs.update(model.step_logs())
        if self.ema is not None and frozen != "G":
            self.ema.update(model.generators, self.step)
        with warnings.catch_warnings():  # fp16: the scaler skips overflowing steps; the schedule counts steps
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.sched_G.step()
            self.sched_D.step()
        self.step += 1
        return logs

    # --- outputs -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _judged(self) -> Iterator[nn.ModuleDict]:
        """The generators worth looking at, in eval mode, as ``model.generators``, without touching
        training state (RNG, the live networks' BN statistics): the EMA ones when kept (with their
        own batch-norm statistics, estimated from the run's seed), else the live ones, and their
        own weights even while a past snapshot plays in their place."""
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = self.model.training
        live = self.model.generators
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self.swaps.real(self.model, "G"):
            torch.manual_seed(self.t.seed)
            self.model.eval()
            if self.ema is not None:
                for net in self.ema.model.values():
                    self.model.refresh_norm_stats(net, seed=self.t.seed)
                self.model.generators = self.ema.model
            try:
                yield self.model.generators
            finally:
                self.model.generators = live
                self.model.train(was_training)

    def samples(self) -> Samples | None:
        """The sample rows for the fixed batch (from the judged generators)."""
        if self.sample_batch is None:
            return None
        with self._judged(), self._autocast():
            rows = self.model.sample(self._to_device(self.sample_batch))
        return {k: v.float().cpu() for k, v in rows.items()}

    def evaluate(self) -> dict[str, Any] | None:
        """``--eval-every``: score the judged generators into the evaluation's rows, and keep the best
        checkpoint. With several ranks, rank 0 scores while the others wait, and all take part in
        writing a new best."""
        started = time.monotonic()
        row = distributed.on_main(self._score)  # a failure while scoring stops every rank
        if distributed.from_main(row is not None and row["best"]):
            self.best = distributed.from_main(self.best)
            self.checkpoints.save_best(self, self.best)
        self._scoring += time.monotonic() - started
        return row

    def _score(self) -> dict[str, Any]:
        import time

        ev = self.evaluation
        started = time.perf_counter()
        with self._judged() as generators:
            value, results = ev.score(generators)
        new_best = ev.judge(self.step, value, self.best)
        row = {"step": self.step, "metric": ev.metric, "value": value, "best": new_best is not None,
               "results": results, "seconds": round(time.perf_counter() - started, 2),
               "train_minutes": round(self.train_seconds / 60, 3)}
        ev.record(row)
        if new_best is not None or (self.best is not None and self.best["metric"] != ev.metric):
            self.best = new_best
        return row

    def _sample_and_check(self) -> None:
        """Hand the sample grid of this step on and let the monitor judge its diversity (rank 0)."""
        rows = self.samples()
        if rows is None:
            return
        if self.on_samples is not None:
            self.on_samples(self.step, rows)
        for key, fake in rows.items():
            if key.startswith("fake_") and f"real_{key[5:]}" in rows:
                self._report(self.monitor.check_samples(self.step, fake, rows[f"real_{key[5:]}"], name=key[5:]))

    # --- NaN and infinities --------------------------------------------------------------------------
    def _watch(self, logs: dict[str, torch.Tensor]) -> None:
        """Fold this step's losses and gradient norms into the finiteness flag (no host sync: checked
        at log rows and before every save). A non-finite gradient norm means the weights just took a
        non-finite update, which no checkpoint may hold, though the losses were still finite."""
        losses = [v.detach().float().reshape(()) for k, v in logs.items() if k.startswith(("loss", "grad_norm/"))]
        if losses:
            self._finite &= torch.isfinite(torch.stack(losses)).all()

    def _losses_finite(self) -> bool:
        """Were all losses and gradients finite since the last check (on every rank)? Resets the flag."""
        ok = not distributed.any_rank(not bool(self._finite))
        self._finite.fill_(True)
        if ok:
            self.guard.passed(self.step)
        return ok

    def _recover(self) -> bool:
        """A loss was NaN or infinite: act by ``--on-nan``. Returns True when the run rolled back
        (the caller restarts its data stream), False to go on (``warn``); raises to stop."""
        failed_at, policy = self.step, self.guard.policy
        if policy == "warn":
            return False
        last = "the last checkpoint is untouched" if self.checkpoints is not None else "nothing was saved"
        if policy == "stop" or self.guard.exhausted:
            why = (f"after {self.guard.rollbacks} rollbacks in a row" if policy == "rollback" else "(--on-nan stop)")
            raise TrainingFailure(f"a loss became NaN or infinite by step {failed_at} {why}; {last}. Lower the "
                                  f"learning rate (--lr) or try --recipe stable, then resume or start again")
        guard_state, spent = self.guard.state(), self.train_seconds
        self._rollback_state()
        self.guard.load(guard_state)
        self.train_seconds = spent  # the time was spent all the same (--max-minutes)
        factor = self.guard.rollback(failed_at)
        self._apply_lr()
        warning = HealthWarning(failed_at, "nan_rollback", f"NaN: rolled back to {self.step}",
                                f"a loss became NaN or infinite by step {failed_at}: rolled back to step {self.step} "
                                f"with the learning rate x{factor:g} until step {failed_at} (rollback "
                                f"{self.guard.rollbacks} of {self.guard.limit} in a row).")
        self.monitor.history.append(warning)
        log.warning("%s", warning)
        self.metrics.event({"step": self.step, "event": "nan_rollback", "failed_at": failed_at,
                            "lr_factor": factor, "rollbacks": self.guard.rollbacks})
        return True

    def _rollback_state(self) -> None:
        """Back to the newest good checkpoint, or to the run's start when none was written yet."""
        if self.checkpoints is not None and self.checkpoints.resume(self) is not None:
            return
        if self._start is None:
            raise TrainingFailure(f"a loss became NaN or infinite by step {self.step} and there is no checkpoint to "
                                  f"roll back to; lower the learning rate (--lr) and start again")
        restore(self, *self._start, "the run's start", own=True)

    def _apply_lr(self) -> None:
        """Set the optimisers' rates for the current step (after a rollback changed the guard)."""
        for sched in (self.sched_G, self.sched_D):
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
                group["lr"] = base * self._lr_at(self.step)

    # --- the loop ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[list[int]]:
        """Ctrl-C / SIGTERM only set a flag: the step in progress finishes, a checkpoint is written,
        the run stops. A second Ctrl-C stops at once, without a checkpoint."""
        requested: list[int] = []

        def request_stop(signum, frame):
            if requested:
                raise KeyboardInterrupt
            requested.append(signum)
            log.warning("stopping after step %d (saving a checkpoint); press Ctrl-C again to abort", self.step + 1)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
                previous[sig] = signal.signal(sig, request_stop)
        try:
            yield requested
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_at``, keeping the full schedule), checkpointing as
        configured. Ctrl-C saves a checkpoint and stops cleanly. Returns a summary."""
        from tqdm.auto import tqdm

        end = min(self.total_steps, stop_at) if stop_at is not None else self.total_steps
        self.model.train()
        if self.step == 0 and self.t.on_nan == "rollback":  # each rank its own (its RNG, replay buffers)
            self._start = ({k: v.detach().clone() for k, v in weights_of(self).items()}, state_of(self))
        batches = iter(self.loader_factory(self.data_position))
        self.metrics.start(self.step)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=self.quiet, unit="it", dynamic_ncols=True,
                   desc="train", smoothing=0.1)
        stop = spent = False
        t = self.t
        budget = 60 * t.max_minutes if t.max_minutes > 0 else None  # seconds of training
        with self._stop_signals() as requested, contextlib.closing(bar):
            last = time.monotonic()
            while self.step < end and not stop and not spent:
                logs = self.train_step(batches)
                self.metrics.add(logs)
                self._watch(logs)
                bar.update(1)
                now = time.monotonic()
                self.train_seconds += now - last - self._scoring
                last, self._scoring = now, 0.0
                main = self.world.main
                stop, timed, spent = distributed.any_ranks((
                    bool(requested), main and self.checkpoints is not None and self.checkpoints.minutes_due(),
                    main and budget is not None and self.train_seconds >= budget))
                if self._after_step(end, stop, timed, bar, spent):  # rolled back: the data stream starts over there
                    batches = iter(self.loader_factory(self.data_position))
                    bar.reset(total=self.total_steps)
                    bar.update(self.step)
        if spent and self.step < end:
            log.info("--max-minutes %g: stopped after %.1f minutes of training at step %d", t.max_minutes,
                     self.train_seconds / 60, self.step)
        return {"step": self.step, "total_steps": self.total_steps, "interrupted": stop and self.step < end,
                "out_of_time": spent and not stop and self.step < end, "train_minutes": self.train_seconds / 60,
                "warnings": [str(w) for w in self.monitor.history]}

    def _after_step(self, end: int, stop: bool, timed: bool, bar, spent: bool = False) -> bool:
        """Log, sample, evaluate and checkpoint as due after a step (``spent``: the --max-minutes
        budget is, so this step ends the run like the last one). Returns True after a rollback."""
        t = self.t
        save = self.checkpoints is not None and (self.checkpoints.steps_due(self.step) or self.step == end or stop
                                                 or timed or spent)
        if self.step % t.log_every == 0 or self.step == end or stop or save:
            finite = self._losses_finite()
            row = self.metrics.row(self.step, self.sched_G.get_last_lr()[0], self.device)
            if self.world.main:
                self._report(self.monitor.check_losses(self.step, row))
                bar.set_postfix_str(self._postfix(row), refresh=False)
            if not finite and self._recover():
                return True
            self._stop_if_failed()
        # a stopping step checkpoints at once (torchrun kills its processes 30 s after a signal)
        if not stop and (self.step % t.sample_every == 0 or self.step == self.total_steps or spent):
            distributed.on_main(self._sample_and_check)
            self._stop_if_failed()
        if not stop and self.evaluation is not None and (self.evaluation.due(self.step, self.total_steps) or spent):
            self.evaluate()
        if save:
            self.save()
        return False

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
            if self.t.stop_on_failure and self.failure is None and not (w.code == "nan" and self.t.on_nan != "warn"):
                where = f" The last checkpoint is in {self.checkpoints.run_dir}." if self.checkpoints else ""
                self.failure = f"stopped at step {w.step} (--stop-on-failure): {w.message}{where}"
