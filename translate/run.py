"""A training run's directory, and the checkpoints in it: the one owner of their layout.

```
RUN/
  config.json          the full configuration (and, copied, in every checkpoint folder)
  classes.json         class names of a class-conditional run        (copied into checkpoints)
  holdout.json         the files --holdout kept out of training      (copied into checkpoints)
  step-<N>/            a checkpoint (engine/checkpoint.py): weights, trainer state, manifest
  latest               names the newest complete checkpoint
  best/                --eval-every's best checkpoint, with best.json
  metrics.jsonl  evals.jsonl  eval.json  eval-<checkpoint>.json  samples/  train.log  report.html
```

Every command that reads a run goes through :class:`Run` and :class:`Checkpoint`. A checkpoint
folder carries its own copy of the run's config (and class names and held-out list), so a
``step-<N>/`` folder copied anywhere on its own still exports, evaluates and samples.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig
from .engine.checkpoint import (LATEST, STEP_RE, TRAINER, is_complete, list_checkpoints, load_checkpoint,
                                resolve_checkpoint)
from .errors import CheckpointError, ConfigError, DataError
from .fileio import atomic_write_text

log = logging.getLogger("translate")

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"
HOLDOUT_FILE = "holdout.json"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"  # one row per --eval-every evaluation
EVAL_FILE = "eval.json"
BEST_DIR = "best"  # the checkpoint with the best eval_metric so far
BEST_FILE = "best.json"
SAMPLES_DIR = "samples"
LOG_FILE = "train.log"
REPORT_FILE = "report.html"
METADATA_FILES = (CONFIG_FILE, CLASSES_FILE, HOLDOUT_FILE)  # what a checkpoint folder carries of its run


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def read_config(path: Path) -> RunConfig:
    """A run's config.json, checked."""
    from .models import config_from_dict, validate

    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); restore it from a backup") from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise CheckpointError(f"{path} is not a translate run config; restore it from a backup")
    cfg = config_from_dict(data, source=str(path))
    validate(cfg)
    return cfg


def holdout_listing(images) -> dict[str, list[str]]:
    """The held-out files of a split (paths as given), to record and compare."""
    return {"A": [str(p) for p in images.files_A], "B": [str(p) for p in images.files_B]}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Metadata:
    """What a run folder and a checkpoint folder both hold: the config, class names, held-out list."""

    folder: Path

    def _metadata_path(self, name: str) -> Path:
        return self.folder / name

    def classes(self, n_classes: int = 0) -> list[str]:
        """Class names in index order; their indices when the run recorded none."""
        names = _read_json(self._metadata_path(CLASSES_FILE))
        if isinstance(names, list) and (not n_classes or len(names) == n_classes):
            return [str(x) for x in names]
        return [str(i) for i in range(n_classes)]

    def check_holdout(self, images) -> None:
        """The held-out files are still the ones recorded at training time: a file added or removed
        since would move the split onto images the run trained on."""
        recorded = _read_json(self._metadata_path(HOLDOUT_FILE))
        if recorded is None:
            return  # a run from before the record, or the embedded set
        now = holdout_listing(images)
        if recorded != now:
            gone = sorted(set(recorded["A"] + recorded["B"]) - set(now["A"] + now["B"]))
            n = max(len(recorded["A"]), len(recorded["B"]))
            raise DataError(f"the data changed since {self.folder} was trained: its held-out images are no longer "
                            f"the last {n} by name ({(gone or ['new files'])[0]} ...), so --split val would score "
                            f"images it trained on; restore the files, or score other data with --data")


class Run(_Metadata):
    """A run directory (it need not exist yet: ``translate train`` creates it)."""

    def __init__(self, path: str | Path) -> None:
        self.folder = self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # --- files ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def evals_path(self) -> Path:
        return self.path / EVALS_FILE

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def best_dir(self) -> Path:
        return self.path / BEST_DIR

    def is_run(self) -> bool:
        return self.config_path.is_file()

    @cached_property
    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise CheckpointError(f"{self.path} is not a run directory (no {CONFIG_FILE}); give the folder that "
                                  f"'translate train' created, e.g. checkpoints/<run>")
        return read_config(self.config_path)

    def write_config(self, cfg: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        payload = cfg.to_dict()
        payload["version"] = __version__
        atomic_write_text(self.config_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        self.__dict__.pop("config", None)

    def write_classes(self, classes: tuple[str, ...] | list[str]) -> None:
        atomic_write_text(self.path / CLASSES_FILE, json.dumps(list(classes)) + "\n")

    def write_holdout(self, images) -> None:
        """Record which images ``--holdout`` kept out of training, so ``translate eval`` can check
        that it scores those and no others."""
        if images.kind != "synthetic":
            atomic_write_text(self.path / HOLDOUT_FILE, json.dumps(holdout_listing(images), indent=1) + "\n")

    def metadata_files(self) -> dict[str, str]:
        """The run's files every checkpoint folder carries a copy of (name -> text)."""
        return {name: (self.path / name).read_text() for name in METADATA_FILES if (self.path / name).is_file()}

    def eval_path(self, checkpoint: Checkpoint) -> Path:
        """Where the scores of ``checkpoint`` go: ``RUN/eval.json`` for the run's latest checkpoint,
        ``RUN/eval-<checkpoint>.json`` for another (``best``, an older ``step-<N>``, a folder copied
        on its own), so scoring the best checkpoint does not replace the scores of the latest."""
        latest = self.latest() if self.is_run() else None
        if latest is not None and checkpoint.path.resolve() == latest.path.resolve():
            return self.path / EVAL_FILE
        return self.path / f"eval-{checkpoint.name}.json"

    # --- checkpoints -------------------------------------------------------------------------------
    def checkpoints(self) -> list[Checkpoint]:
        """Complete ``step-<N>`` checkpoints, oldest first."""
        return [Checkpoint(p) for p in list_checkpoints(self.path)]

    def latest(self) -> Checkpoint | None:
        """The checkpoint ``latest`` names (else the newest complete one), or None."""
        pointer = self.path / LATEST
        if pointer.is_file():
            candidate = self.path / pointer.read_text().strip()
            if is_complete(candidate):
                return Checkpoint(candidate)
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> Checkpoint | None:
        return Checkpoint(self.best_dir) if is_complete(self.best_dir) else None

    def generators(self, names: list[str] | None = None) -> dict[str, LoadedGenerator]:
        """The latest checkpoint's generators (see :meth:`Checkpoint.generators`)."""
        return open_checkpoint(self.path).generators(names)


class Checkpoint(_Metadata):
    """A checkpoint folder (``step-<N>/``, ``best/``): weights, trainer state, manifest, and copies
    of its run's config, class names and held-out list. A folder from before the copies reads them
    from the run directory around it."""

    def __init__(self, path: str | Path) -> None:
        self.folder = self.path = Path(path)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run(self) -> Run:
        """The run directory the folder sits in (for a folder copied on its own: the folder around it)."""
        return Run(self.path.parent)

    def _metadata_path(self, name: str) -> Path:
        own = self.path / name
        return own if own.is_file() else self.path.parent / name

    @cached_property
    def config(self) -> RunConfig:
        path = self._metadata_path(CONFIG_FILE)
        if not path.is_file():
            raise CheckpointError(f"{self.path} carries no {CONFIG_FILE} and is not inside a run directory; copy the "
                                  f"run's config.json into it")
        return read_config(path)

    @cached_property
    def step(self) -> int:
        m = STEP_RE.match(self.name)
        if m:
            return int(m.group(1))
        best = _read_json(self.path / BEST_FILE)
        if isinstance(best, dict) and "step" in best:
            return int(best["step"])
        import torch

        try:
            return int(torch.load(self.path / TRAINER, map_location="cpu", weights_only=True).get("step", 0))
        except Exception:  # noqa: BLE001 - the step is for naming; loading reports damage properly
            return 0

    @property
    def label(self) -> str:
        """The folder name, with the step for a folder that moves on (``best-step00001200``)."""
        return self.name if STEP_RE.match(self.name) else f"{self.name}-step{self.step:08d}"

    def load(self):
        """(weights, trainer state), the manifest checked."""
        weights, state, _ = load_checkpoint(self.path)
        return weights, state

    def generators(self, names: list[str] | None = None) -> dict[str, LoadedGenerator]:
        """The generators ``names`` (default: all) from one read of the checkpoint, in eval mode on
        the CPU, with the EMA weights when the run kept them (what its sample grids and evaluations
        showed: their normalisation statistics are re-estimated with the run's seed, as in training),
        spectrally normalised weights folded into plain ones."""
        import torch

        from .models import build_model, family_of
        from .nn.spectral import fold_spectral_norm

        cfg = self.config
        fam = family_of(cfg)
        model = build_model(cfg)
        available = list(model.generators)
        for name in names or ():
            if name not in available:
                raise ConfigError(f"{self.path} has generators {', '.join(available)}, not {name!r}; choose one "
                                  f"with --generator")
        weights, state = self.load()
        translations = {tr.generator: tr for tr in fam.translations(cfg)}
        loaded = {}
        for name in names or available:
            use_ema = any(k.startswith(f"ema.{name}.") for k in weights)
            prefix = f"ema.{name}." if use_ema else f"generators.{name}."
            net = model.generators[name]
            missing, unexpected = net.load_state_dict({k[len(prefix):]: v for k, v in weights.items()
                                                       if k.startswith(prefix)}, strict=False)
            if missing or unexpected:
                raise CheckpointError(f"{self.path} does not fit the {name} its config.json describes (missing "
                                      f"{len(missing)}, unexpected {len(unexpected)} tensors); is config.json from "
                                      f"this run?")
            if use_ema:
                with torch.random.fork_rng():
                    model.refresh_norm_stats(net, seed=cfg.train.seed)
            fold_spectral_norm(net)  # plain weights: what export traces and eval runs
            net.eval()
            loaded[name] = LoadedGenerator(net, name, cfg, fam, self, int(state.get("step", 0)), use_ema,
                                           translations.get(name))
        return loaded


def open_checkpoint(source: str | Path) -> Checkpoint:
    """A run directory (its latest checkpoint) or a checkpoint folder (``step-<N>``, ``best``)."""
    return Checkpoint(resolve_checkpoint(source))


@dataclass
class LoadedGenerator:
    """A trained generator and what it was trained as."""

    net: Any  # nn.Module
    name: str  # "G", "G_AB", "G_BA"
    cfg: RunConfig
    family: Any  # the GANModel subclass
    checkpoint: Checkpoint
    step: int
    ema: bool
    translation: Any = None  # models.Translation; None for a generative family

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.run.path

    @property
    def source_side(self) -> str:
        """The domain the generator reads: "A" or "B"."""
        return self.translation.source

    @property
    def direction(self) -> str:
        return self.translation.direction


def load_generator(source: str | Path, generator: str | None = None) -> LoadedGenerator:
    """A run directory or a checkpoint folder -> one generator (the first when not named)."""
    every = open_checkpoint(source).generators([generator] if generator else None)
    return every[generator] if generator else next(iter(every.values()))
