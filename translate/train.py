"""``translate train``: config -> data -> model -> trainer, and the run directory around them."""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

from .config import RunConfig, TrainConfig
from .errors import CheckpointError, ConfigError
from .run import Run, open_checkpoint

log = logging.getLogger("translate.train")

SYNTHETIC_DEFAULTS = {"size": 64, "steps": 400, "sample_every": 50, "checkpoint_every": 200}


def data_path(value: str | Path) -> str:
    """``--data`` as stored in a run: absolute, so the run resumes from any directory."""
    return str(Path(value).expanduser().resolve())


RECIPE_SHARED = ("size", "epochs", "batch_size", "lr")  # what a recipe still sets when --model names another family


def build_config(options: dict[str, Any], yaml_options: dict[str, Any] | None = None,
                 yaml_source: str = "config", *, root: str | Path | None = None, mirror: str | None = None,
                 quiet: bool = False) -> RunConfig:
    """Merge defaults < family defaults for the data < a named data set's recipe < YAML < command
    line into a RunConfig. With ``pair`` the named data set is downloaded into ``root`` first if it
    is not there (after the options are checked, so a typo costs no download)."""
    from .config import split_options
    from .data import detect_layout
    from .models import default_family, family, validate

    merged = dict(yaml_options or {})
    merged.update({k: v for k, v in options.items() if v is not None})
    ds = None
    if merged.get("pair") is not None:
        ds = _pair_recipe(merged)
    if merged.get("data") is not None:
        merged["data"] = data_path(merged["data"])
    data = merged.get("data")
    model = merged.get("model")
    if model is None and data is not None and _is_array_source(Path(data)):
        model = default_family("images")
    generative = model is not None and family(model).generative
    layout = detect_layout(data) if ds is None and not generative else None
    fam = family(model or default_family(layout.kind))
    if fam.generative and data is None and ds is None:
        raise ConfigError(f"{fam.family} learns from real images: give --pair mnist (or fashion_mnist), --data "
                          f"FILE.npz (images x, labels y), --data DIR/<class>/*.png or --data DIR of images")
    merged["model"] = fam.family
    _check_layout(fam, ds, layout)
    _apply_recipe(merged, fam)
    if layout is not None and layout.kind == "synthetic":  # sized to finish in a few minutes on two CPU cores
        for k, v in SYNTHETIC_DEFAULTS.items():
            if not (k == "steps" and merged.get("epochs") is not None):
                merged.setdefault(k, v)
    for k, v in fam.train_defaults.items():
        if not (k == "epochs" and merged.get("steps") is not None):
            merged.setdefault(k, v)
    train_kw, model_kw = split_options(merged, fam.config_class, fam.family, yaml_source)
    cfg = RunConfig(train=TrainConfig(**train_kw), model=fam.config_class(**model_kw))
    validate(cfg)
    if ds is not None:
        from .data import pairs

        cfg.train.data = data_path(pairs.ensure(ds, root, mirror=mirror, quiet=quiet))
    return cfg


def _is_array_source(path: Path) -> bool:
    from .data.arrays import is_idx_folder

    return path.suffix.lower() in (".npz", ".npy") and path.is_file() or is_idx_folder(path)


def _apply_recipe(merged: dict[str, Any], fam) -> None:
    """Put ``--recipe NAME``'s options for the family ``fam`` under the user's own (in place)."""
    name = merged.get("recipe")
    if name is None:
        return
    if name not in fam.recipes:
        from .models import recipe_names

        known = recipe_names()
        raise ConfigError(f"{fam.family} has no recipe {name!r}" + (f"; it has {', '.join(fam.recipes)}"
                                                                   if fam.recipes else "") +
                          ("" if name in known else f" (recipes: {', '.join(known)})"))
    from .engine.losses import TARGET_LOSSES

    loss = merged.get("gan_loss") or fam.config_class.gan_loss
    for k, v in fam.recipes[name].items():
        if k == "label_smoothing" and loss not in TARGET_LOSSES:
            continue  # label smoothing needs a target-based loss
        if k == "ada_target" and loss in ("wgan", "wgan-gp"):
            continue  # a critic's score has no sign to adapt by: the augmentation keeps a fixed probability
        merged.setdefault(k, v)


LAYOUTS = {"unpaired": "unpaired trainA/ + trainB/ folders", "paired": "A/ + B/ folders of pairs",
           "aligned": "side-by-side AB pairs", "synthetic": "the embedded scenes"}
PAIR_LAYOUT = {"unpaired": "unpaired", "paired": "aligned"}  # a named data set's kind -> its folders' layout


def _check_layout(fam, ds, layout) -> None:
    """A family that trains on some layouts only (``layouts``: CUT on unpaired folders) refuses the
    others in one line, before anything is downloaded."""
    kind = PAIR_LAYOUT.get(ds.kind) if ds is not None else layout.kind if layout is not None else None
    if not fam.layouts or kind is None or kind in fam.layouts:
        return
    what = f"{ds.name} is a paired data set" if ds is not None else f"{layout.root} holds {LAYOUTS[kind]}"
    alternative = ""
    if ds is not None:
        from .data import pairs

        unpaired = f"{ds.name}_unpaired"
        alternative = f"; its unpaired copy is --pair {unpaired}" if unpaired in pairs.DATASETS else ""
    from .models import default_family

    wants = " or ".join(LAYOUTS[k] for k in fam.layouts if k != "synthetic")
    other = default_family(kind)  # the family that trains this layout by default
    raise ConfigError(f"{fam.family} trains on {wants}, and {what}{alternative}; train {other} on them "
                      f"(--model {other}), or arrange the images as {wants}")


def _pair_recipe(merged: dict[str, Any]):
    """Put a named data set's recipe under the user's options (in place); returns the entry."""
    from .data import pairs

    ds = pairs.get(str(merged["pair"]))
    if merged.get("data") is not None:
        raise ConfigError(f"--pair {ds.name} and --data both name the training data; give one of them")
    if not ds.recipe:
        raise ConfigError(f"{ds.name} is not a training set ({ds.description}); see 'translate data list'")
    model = merged.get("model") or ds.recipe["model"]
    recipe = ds.recipe_for(model)  # the data set's recipe for this family (CUT's on the CycleGAN sets)
    if recipe is None:  # another family: keep the main recipe's schedule, not its losses
        recipe = {k: v for k, v in ds.recipe.items() if k in RECIPE_SHARED}
    from .models import FAMILIES

    if model not in FAMILIES:
        raise ConfigError(f"{ds.name} trains the {model} model, which this version of translate does not have yet "
                          f"(it has {', '.join(FAMILIES)}); 'translate data download {ds.name}' fetches the "
                          f"data meanwhile")
    given = {k for k, v in merged.items() if v is not None}
    for k, v in recipe.items():
        merged.setdefault(k, v)
    if "steps" in given and "epochs" not in given:
        merged.pop("epochs", None)  # --steps replaces the recipe's epochs
    merged["model"] = model
    merged["pair"] = ds.name
    return ds


def default_run_dir(cfg: RunConfig, root: str | Path = "checkpoints") -> Path:
    data = Path(cfg.train.data).resolve() if cfg.train.data else None
    name = "synthetic" if data is None else data.stem if data.is_file() else data.name
    base = Path(root) / f"{name}-{cfg.train.model}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def check_new_run_dir(run_dir: Path) -> None:
    """A folder holding checkpoints is another run: refuse it (a config without checkpoints is the
    trace of a run that failed before its first checkpoint, and may be started again)."""
    if run_dir.is_dir() and any(run_dir.glob("step-*")):
        raise CheckpointError(f"{run_dir} already holds a run; continue it with 'translate train --resume {run_dir}' "
                              f"or choose another --run-dir")
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a folder; choose another --run-dir")


def load_run_config(run_dir: Path) -> RunConfig:
    """The config a run was trained with (``translate train --resume``)."""
    return Run(run_dir).config


RESUME_OVERRIDABLE = ("steps", "epochs", "device", "workers", "stop_on_failure", "log_every", "sample_every",
                      "checkpoint_every", "checkpoint_minutes", "keep_last", "eval_every", "eval_metric", "eval_count",
                      "compile", "channels_last", "on_nan", "log", "max_minutes")


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False,
          stop_at: int | None = None) -> dict[str, Any]:
    """Run (or continue) a training run in ``run_dir``. Returns the trainer's summary. ``resume``
    continues from the newest checkpoint that verifies, or starts at step 0 with the run's saved
    config when it has none yet (a run killed before its first checkpoint)."""
    from .engine import distributed
    from .engine.device import resolve_device, seed_everything
    from .engine.schedule import total_steps_for
    from .models import build_model

    t, run = cfg.train, Run(run_dir)
    world = distributed.world()
    # under torchrun each rank trains on cuda:LOCAL_RANK; a rank without its GPU stops them all
    device = distributed.everywhere(lambda: distributed.device_for(resolve_device(t.device)))
    seed_everything(t.seed)
    # under torchrun, a rank that cannot read the data or the run stops them all (not only itself)
    dataset = distributed.everywhere(lambda: _load_data(cfg))
    total = total_steps_for(t, len(dataset), world_size=world.size)
    if not resume:
        distributed.everywhere(lambda: check_new_run_dir(run.path))
    model = build_model(cfg)
    model.setup_training(open_checkpoint)  # a distillation's teacher (before a checkpoint is restored)
    if world.rank > 0:  # its own dropout, noise and latents (the weights come from rank 0)
        seed_everything(distributed.rank_seed(t.seed, world.rank))
    sample_batch = distributed.everywhere(lambda: model.prepare_sample_batch(dataset.sample_batch(t.n_samples),
                                                                            t.seed))
    # rank 0 writes the run's files; a failure there (a read-only folder) stops every rank
    sinks = distributed.on_main(lambda: _prepare_run_dir(run, cfg, dataset, resume)) or []
    trainer = _trainer(cfg, run, model, dataset, device, total, sample_batch, sinks, quiet)
    try:
        if resume:
            path = trainer.resume()
            if path is None:
                log.info("%s has no checkpoint yet: starting it from step 0 with its saved config", run.path)
            else:
                log.info("resumed %s from %s (step %d of %d)", run.path, path.name, trainer.step, total)
        _log_start(cfg, model, dataset, trainer, total, device, world)
        summary = trainer.fit(stop_at=stop_at)
    finally:
        trainer.metrics.close()
        _close_file_log()
    if world.main:
        from .report import plot_loss_curves

        plot_loss_curves(run.metrics_path, run.path / "loss_curves.png")
    summary["run_dir"] = str(run.path)
    return summary


def _load_data(cfg: RunConfig):
    from .data import TranslationDataset, detect_layout
    from .models import family_of

    t, fam = cfg.train, family_of(cfg)
    kind = fam.data_of(cfg)
    if kind == "images":
        return _generative_data(cfg, fam.conditional)
    layout = detect_layout(t.data)
    data = TranslationDataset(layout, size=t.size, load_size=t.load_size, flip=t.flip,
                              unpaired=kind == "unpaired", synthetic_count=t.synthetic_count, seed=t.seed,
                              max_bad_fraction=t.max_bad_fraction, holdout=t.holdout)
    if data.validation is not None and layout.kind != "synthetic":
        log.info("holding out %s (never trained on)", data.validation.describe())
    return data


def _prepare_run_dir(run: Run, cfg: RunConfig, dataset, resume: bool) -> list:
    """Write the run's config (on resume: with any changed options), class names and held-out
    list; start its train.log; open the metric sinks (``--log tensorboard``)."""
    run.write_config(cfg)
    from .models import family_of

    if family_of(cfg).data_of(cfg) == "images":
        run.write_classes(dataset.set.classes)
    validation = getattr(dataset, "validation", None)
    if validation is not None and cfg.train.holdout and not (resume and (run.path / "holdout.json").is_file()):
        run.write_holdout(validation)
    _setup_file_log(run.log_path)
    if cfg.train.log == "tensorboard":
        from .engine.logs import TensorBoardSink

        return [TensorBoardSink(run.path / "tensorboard")]
    return []


def _trainer(cfg: RunConfig, run: Run, model, dataset, device, total: int, sample_batch, sinks: list, quiet: bool):
    """The trainer with the run's pieces: checkpoints (carrying the run's config), the metrics log,
    --eval-every's evaluation and the sample grids."""
    from .data import make_loader
    from .engine import distributed
    from .engine.logs import MetricsLog
    from .engine.state import Checkpointer
    from .engine.trainer import Trainer

    t, world = cfg.train, distributed.world()

    def loader(start: int):
        return make_loader(dataset, batch_size=t.batch_size, seed=t.seed, start=start, workers=t.workers,
                           pin_memory=device.type == "cuda", rank=world.rank, world=world.size,
                           local_processes=world.local_size)

    files = run.metadata_files() if world.main else {}  # rank 0 writes the checkpoints
    checkpoints = Checkpointer(run.path, every_steps=t.checkpoint_every, every_minutes=t.checkpoint_minutes,
                               keep_last=t.keep_last, files=files, best_dir=run.best_dir,
                               logs=(run.metrics_path, run.evals_path))
    evaluation = distributed.on_main(lambda: _evaluation(cfg, run, device, dataset, sinks)) if t.eval_every else None

    def on_samples(step: int, rows) -> None:
        from .report import save_grid

        save_grid(rows, run.samples_dir / f"step-{step:08d}.png")
        for sink in sinks:
            sink.images(step, rows)

    return Trainer(model, cfg, device=device, total_steps=total, loader_factory=loader, sample_batch=sample_batch,
                   quiet=quiet, checkpoints=checkpoints, metrics=MetricsLog(run.metrics_path, sinks),
                   evaluation=evaluation, on_samples=on_samples)


def _log_start(cfg: RunConfig, model, dataset, trainer, total: int, device, world) -> None:
    import torch

    t = cfg.train
    n_params = {name: sum(p.numel() for p in net.parameters()) for name, net in
                {**model.generators, **model.discriminators}.items()}
    log.info("%s on %s | %s | %d steps, batch %d, %dx%d | device %s%s%s | %s",
             t.model, dataset.describe(), ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in n_params.items()),
             total, t.batch_size, t.size, t.size, device, f" ({trainer.dtype})".replace("torch.", "")
             if trainer.dtype else "", ", compiled" if t.compile else "",
             f"torch {torch.__version__}, {platform.python_version()}")
    if world.active:
        lr = t.lr * trainer.lr_factor
        log.info("data parallel over %s: effective batch %d (%d per process), learning rate %.3g (%s x %s, "
                 "--lr-scaling %s)%s", world.describe(), t.batch_size * world.size, t.batch_size, lr, t.lr,
                 f"{trainer.lr_factor:.3g}", t.lr_scaling,
                 ", synchronised batch norm" if trainer.sync_bn else "")


def _evaluation(cfg: RunConfig, run: Run, device, dataset, sinks: list):
    """``--eval-every``: score a fixed validation subset (``eval_count`` images) of the training
    data set's held-out images; the best checkpoint by ``eval_metric`` goes to ``RUN/best/``."""
    from .engine.best import Evaluation
    from .evaluate import build_scorer, metric_value
    from .metrics import METRIC
    from .models import family_of

    t = cfg.train
    metric = METRIC[t.eval_metric]
    try:
        scorer, description = build_scorer(cfg, split="val", limit=t.eval_count, fid=metric.needs == "inception",
                                           classify=metric.needs == "classes", seed=t.seed,
                                           device=str(device), dataset=dataset)
    except ConfigError as exc:
        hint = "" if family_of(cfg).generative else " (or score by a paired metric: --eval-metric l1)"
        raise ConfigError(f"--eval-every: {exc}{hint}") from None
    paired = getattr(getattr(scorer, "data", None), "paired", False)
    if metric.needs == "ground_truth" and not paired:
        raise ConfigError(f"--eval-metric {t.eval_metric} compares outputs with their ground truth, and the validation "
                          f"images have none (unpaired names); use --eval-metric fid or kid")
    if metric.needs == "classes" and getattr(scorer, "classifier", None) is None:
        raise ConfigError(f"--eval-metric {t.eval_metric} needs the digit classifier, which judges 10-class data; "
                          f"use --eval-metric fid or kid")
    log.info("scoring every %d steps by %s on %s; the best checkpoint goes to best/", t.eval_every, t.eval_metric,
             description)
    per_item = ("per_image", "per_class_accuracy", "per_class_classifier_fd", "per_class_variety")

    def score(generators):
        results = scorer(generators)
        summary = {d: {k: v for k, v in r.items() if k not in per_item} for d, r in results.items()}
        return metric_value(results, t.eval_metric), summary

    return Evaluation(every=t.eval_every, metric=t.eval_metric, better=metric.better, score=score,
                      path=run.evals_path, sinks=sinks)


def _generative_data(cfg: RunConfig, conditional: bool):
    """The real images of a noise-to-image run; fills in the config's ``channels`` (and
    ``n_classes``) from the data."""
    from .data import pairs
    from .data.arrays import load_image_set, split
    from .data.folders import GenerationDataset

    t, m = cfg.train, cfg.model
    classes = pairs.get(t.pair).classes if t.pair else ()
    images, held = split(load_image_set(t.data, classes=classes, max_bad_fraction=t.max_bad_fraction))
    if not m.channels:
        m.channels = images.channels
    if conditional:
        if not images.labelled:
            raise ConfigError(f"{t.model} needs class labels, and {t.data} has none: put the images in DIR/<class>/ "
                              f"folders, or give an .npz with images x and labels y (or train --model dcgan)")
        if m.n_classes and m.n_classes != len(images.classes):
            raise ConfigError(f"n_classes is {m.n_classes} but {t.data} has {len(images.classes)} classes; "
                              f"drop n_classes (0 takes it from the data)")
        m.n_classes = len(images.classes)
    if len(held):
        log.info("holding out %d images of %s (never trained on) for samples and scores", len(held), t.data)
    return GenerationDataset(images, size=t.size, channels=m.channels, flip=t.flip, seed=t.seed, held_out=held)


def _setup_file_log(path: Path) -> None:
    """Also write the log to ``RUN/train.log`` (replacing the previous run's file, in this process)."""
    _close_file_log()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._translate_run_log = True
    logging.getLogger("translate").addHandler(handler)


def _close_file_log() -> None:
    root = logging.getLogger("translate")
    for h in [h for h in root.handlers if getattr(h, "_translate_run_log", False)]:
        root.removeHandler(h)
        h.close()
