"""``translate train``: config -> data -> model -> trainer, and the run directory around them."""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

from . import __version__
from .config import FAMILY_CONFIGS, FAMILY_TRAIN_DEFAULTS, GENERATIVE, RECIPES, RunConfig, TrainConfig, validate
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write_text

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
        model = "dcgan"
    layout = detect_layout(data) if ds is None and model not in GENERATIVE else None
    model = model or ("cyclegan" if layout.kind == "unpaired" else "pix2pix")
    if model not in FAMILY_CONFIGS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(FAMILY_CONFIGS)}")
    if model in GENERATIVE and data is None and ds is None:
        raise ConfigError(f"{model} learns from real images: give --pair mnist (or fashion_mnist), --data FILE.npz "
                          f"(images x, labels y), --data DIR/<class>/*.png or --data DIR of images")
    merged["model"] = model
    _apply_recipe(merged, model)
    for k, v in FAMILY_TRAIN_DEFAULTS.get(model, {}).items():
        if not (k == "epochs" and merged.get("steps") is not None):
            merged.setdefault(k, v)
    if layout is not None and layout.kind == "synthetic":  # sized to finish in a few minutes on two CPU cores
        for k, v in SYNTHETIC_DEFAULTS.items():
            if not (k == "steps" and merged.get("epochs") is not None):
                merged.setdefault(k, v)
    train_kw, model_kw = split_options(merged, model, yaml_source)
    cfg = RunConfig(train=TrainConfig(**train_kw), model=FAMILY_CONFIGS[model](**model_kw))
    validate(cfg)
    if ds is not None:
        from .data import pairs

        cfg.train.data = data_path(pairs.ensure(ds, root, mirror=mirror, quiet=quiet))
    return cfg


def _is_array_source(path: Path) -> bool:
    from .data.arrays import is_idx_folder

    return path.suffix.lower() in (".npz", ".npy") and path.is_file() or is_idx_folder(path)


def _apply_recipe(merged: dict[str, Any], model: str) -> None:
    """Put ``--recipe NAME``'s options under the user's own (in place)."""
    name = merged.get("recipe")
    if name is None:
        return
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    from .engine.losses import TARGET_LOSSES

    loss = merged.get("gan_loss") or FAMILY_CONFIGS[model].gan_loss
    for k, v in RECIPES[name][model].items():
        if k == "label_smoothing" and loss not in TARGET_LOSSES:
            continue  # label smoothing needs a target-based loss
        merged.setdefault(k, v)


def _pair_recipe(merged: dict[str, Any]):
    """Put a named data set's recipe under the user's options (in place); returns the entry."""
    from .data import pairs

    ds = pairs.get(str(merged["pair"]))
    if merged.get("data") is not None:
        raise ConfigError(f"--pair {ds.name} and --data both name the training data; give one of them")
    if not ds.recipe:
        raise ConfigError(f"{ds.name} is not a training set ({ds.description}); see 'translate data list'")
    recipe = dict(ds.recipe)
    model = merged.get("model") or recipe["model"]
    if model != recipe["model"]:  # another family: keep the recipe's schedule, not its losses
        recipe = {k: v for k, v in recipe.items() if k in RECIPE_SHARED}
    if model not in FAMILY_CONFIGS:
        raise ConfigError(f"{ds.name} trains the {model} model, which this version of translate does not have yet "
                          f"(it has {', '.join(FAMILY_CONFIGS)}); 'translate data download {ds.name}' fetches the "
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


def write_run_config(run_dir: Path, cfg: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = cfg.to_dict()
    payload["version"] = __version__
    atomic_write_text(run_dir / "config.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json); give the folder that "
                              f"'translate train' created, e.g. checkpoints/<run>")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); restore it from a backup") from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise CheckpointError(f"{path} is not a translate run config; restore it from a backup")
    cfg = RunConfig.from_dict(data, source=str(path))
    validate(cfg)
    return cfg


RESUME_OVERRIDABLE = ("steps", "epochs", "device", "workers", "stop_on_failure", "log_every", "sample_every",
                      "checkpoint_every", "keep_last", "eval_every", "eval_metric", "eval_count", "compile",
                      "channels_last")


def train(cfg: RunConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False,
          stop_at: int | None = None) -> dict[str, Any]:
    """Run (or continue) a training run in ``run_dir``. Returns the trainer's summary."""
    import torch

    from .data import TranslationDataset, detect_layout, make_loader
    from .engine import distributed
    from .engine.checkpoint import list_checkpoints
    from .engine.device import resolve_device, seed_everything
    from .engine.trainer import Trainer, total_steps_for
    from .models import build_model
    from .report import plot_loss_curves

    t = cfg.train
    world = distributed.world()
    # under torchrun each rank trains on cuda:LOCAL_RANK; a rank without its GPU stops them all
    device = distributed.everywhere(lambda: distributed.device_for(resolve_device(t.device)))
    seed_everything(t.seed)

    def load_data():
        if t.model in GENERATIVE:
            return _generative_data(cfg)
        layout = detect_layout(t.data)
        data = TranslationDataset(layout, size=t.size, load_size=t.load_size, flip=t.flip,
                                  unpaired=t.model == "cyclegan", synthetic_count=t.synthetic_count, seed=t.seed,
                                  max_bad_fraction=t.max_bad_fraction, holdout=t.holdout)
        if data.validation is not None and layout.kind != "synthetic":
            log.info("holding out %s (never trained on)", data.validation.describe())
        return data

    def check_run_dir():
        if resume and not list_checkpoints(run_dir):
            raise CheckpointError(f"{run_dir} has no complete checkpoint to resume from; start it again with "
                                  f"'translate train --config {run_dir / 'config.json'} --run-dir {run_dir}'")
        if not resume:
            check_new_run_dir(run_dir)

    # under torchrun, a rank that cannot read the data or the run stops them all (not only itself)
    dataset = distributed.everywhere(load_data)
    total = total_steps_for(t, len(dataset), world_size=world.size)
    distributed.everywhere(check_run_dir)
    model = build_model(cfg)
    if world.rank > 0:  # its own dropout, noise and latents (the weights come from rank 0)
        seed_everything(distributed.rank_seed(t.seed, world.rank))

    def loader(start: int):
        return make_loader(dataset, batch_size=t.batch_size, seed=t.seed, start=start, workers=t.workers,
                           pin_memory=device.type == "cuda", rank=world.rank, world=world.size,
                           local_processes=world.local_size)

    sample_batch = dataset.sample_batch(t.n_samples)
    if hasattr(model, "prepare_sample_batch"):
        sample_batch = model.prepare_sample_batch(sample_batch, t.seed)
    scorer = distributed.on_main(lambda: _eval_scorer(cfg, device, dataset)) if t.eval_every else None
    trainer = Trainer(model, cfg, run_dir, device=device, total_steps=total, loader_factory=loader,
                      sample_batch=sample_batch, quiet=quiet, scorer=scorer)
    if world.main:
        write_run_config(run_dir, cfg)  # set-up succeeded; on resume this records changed options
        if t.model in GENERATIVE:
            write_classes(run_dir, dataset.set.classes)
        elif getattr(dataset, "validation", None) is not None and t.holdout and not resume:
            write_holdout(run_dir, dataset.validation)
        _setup_file_log(run_dir)
    if resume:
        path = trainer.resume()
        log.info("resumed %s from %s (step %d of %d)", run_dir, path.name, trainer.step, total)
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
    summary = trainer.fit(stop_at=stop_at)
    if world.main:
        plot_loss_curves(run_dir / "metrics.jsonl", run_dir / "loss_curves.png")
    summary["run_dir"] = str(run_dir)
    return summary


def _eval_scorer(cfg: RunConfig, device, dataset):
    """``--eval-every``: the scorer of a fixed validation subset (``eval_count`` images) of the
    training data set's held-out images."""
    from .evaluate import build_scorer

    t = cfg.train
    try:
        scorer, description = build_scorer(cfg, split="val", limit=t.eval_count, fid=t.eval_metric in ("fid", "kid"),
                                           classify=t.eval_metric == "class_accuracy", seed=t.seed,
                                           device=str(device), dataset=dataset)
    except ConfigError as exc:
        hint = " (or score by a paired metric: --eval-metric l1)" if t.model not in GENERATIVE else ""
        raise ConfigError(f"--eval-every: {exc}{hint}") from None
    paired = getattr(getattr(scorer, "data", None), "paired", False)
    if t.eval_metric in ("l1", "psnr", "ssim") and not paired:
        raise ConfigError(f"--eval-metric {t.eval_metric} compares outputs with their ground truth, and the validation "
                          f"images have none (unpaired names); use --eval-metric fid or kid")
    if t.eval_metric == "class_accuracy" and getattr(scorer, "classifier", None) is None:
        raise ConfigError("--eval-metric class_accuracy needs the digit classifier, which judges 10-class data; "
                          "use --eval-metric fid or kid")
    log.info("scoring every %d steps by %s on %s; the best checkpoint goes to best/", t.eval_every, t.eval_metric,
             description)
    return scorer


def _generative_data(cfg: RunConfig):
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
    if t.model == "cgan":
        if not images.labelled:
            raise ConfigError(f"cgan needs class labels, and {t.data} has none: put the images in DIR/<class>/ "
                              f"folders, or give an .npz with images x and labels y (or train --model dcgan)")
        if m.n_classes and m.n_classes != len(images.classes):
            raise ConfigError(f"n_classes is {m.n_classes} but {t.data} has {len(images.classes)} classes; "
                              f"drop n_classes (0 takes it from the data)")
        m.n_classes = len(images.classes)
    if len(held):
        log.info("holding out %d images of %s (never trained on) for samples and scores", len(held), t.data)
    return GenerationDataset(images, size=t.size, channels=m.channels, flip=t.flip, seed=t.seed, held_out=held)


CLASSES_FILE = "classes.json"


HOLDOUT_FILE = "holdout.json"


def holdout_listing(images) -> dict[str, list[str]]:
    """The held-out files of a split (paths as given), to record and compare."""
    return {"A": [str(p) for p in images.files_A], "B": [str(p) for p in images.files_B]}


def write_holdout(run_dir: Path, images) -> None:
    """Record which images ``--holdout`` kept out of training, so ``translate eval`` can check that
    it scores those and no others."""
    if images.kind != "synthetic":
        atomic_write_text(run_dir / HOLDOUT_FILE, json.dumps(holdout_listing(images), indent=1) + "\n")


def write_classes(run_dir: Path, classes: tuple[str, ...]) -> None:
    atomic_write_text(run_dir / CLASSES_FILE, json.dumps(list(classes)) + "\n")


def read_classes(run_dir: Path, n_classes: int = 0) -> list[str]:
    """The class names of a run (index order); their indices when the run did not record names."""
    path = Path(run_dir) / CLASSES_FILE
    try:
        names = json.loads(path.read_text())
        if isinstance(names, list) and (not n_classes or len(names) == n_classes):
            return [str(x) for x in names]
    except (OSError, ValueError):
        pass
    return [str(i) for i in range(n_classes)]


def _setup_file_log(run_dir: Path) -> None:
    """Also write the log to ``RUN/train.log`` (replacing the previous run's file, in this process)."""
    root = logging.getLogger("translate")
    for h in [h for h in root.handlers if getattr(h, "_translate_run_log", False)]:
        root.removeHandler(h)
        h.close()
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._translate_run_log = True
    root.addHandler(handler)

