"""``translate eval``: score a run (or two folders) and write ``eval.json``.

- Translation runs (pix2pix, CycleGAN): the run's generator translates the ``val`` or ``test``
  images of its data (:mod:`translate.data.validation`) at the training size, with the dropout
  noise drawn from fixed seeds so scores repeat. Outputs are compared with the ground truth where
  the split has it (L1, PSNR, SSIM per image and their means), and as a set with the real
  target-domain images of the split (FID, KID).
- Noise-to-image runs (dcgan, cgan): samples against the held-out real images (FID, KID); a cgan's
  samples are also judged by the project's digit classifier (class accuracy, per class, and the
  Frechet distance per class in the classifier's feature space).
- Two folders: FID / KID between them, plus the paired metrics over files with equal names.

The same scorers serve ``--eval-every`` during training (:class:`TranslationScorer`,
:class:`SampleScorer`), on a fixed subset of the validation images.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .errors import ConfigError, DataError
from .fileio import atomic_write_text, json_safe
from .images import resize

log = logging.getLogger("translate.eval")

KID_SUBSETS = 100


# --- images ----------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A split's images at one size, uint8 NHWC: ``A`` and ``B`` (each side's own count when
    unpaired), their names, and whether B is A's ground truth."""

    A: np.ndarray
    B: np.ndarray
    names_A: list[str]
    names_B: list[str]
    paired: bool
    key: str  # identifies the files (cache key of their real-image features)
    description: str


def prepare(images, size: int, limit: int | None = None) -> Prepared:
    """Decode and resize the images of an :class:`~translate.data.validation.EvalImages` split;
    undecodable ones are skipped with a warning (a pair loses both sides)."""
    A, B, na, nb = [], [], [], []
    if images.paired:
        for i in range(len(images) if limit is None else min(limit, len(images))):
            a, b = images.load(i, "A"), images.load(i, "B")
            if a is None or b is None:
                log.warning("skipping %s of %s: it cannot be decoded", images.name(i), images.source)
                continue
            A.append(resize(a, size)), B.append(resize(b, size)), na.append(images.name(i))
        nb = list(na)
    else:
        for side, out, names in (("A", A, na), ("B", B, nb)):
            count = images.count_of(side)
            for i in range(count if limit is None else min(limit, count)):
                img = images.load(i, side)
                if img is None:
                    log.warning("skipping %s of %s: it cannot be decoded", images.name(i, side), images.source)
                    continue
                out.append(resize(img, size)), names.append(images.name(i, side))
    if len(A) < 2 or len(B) < 2:
        raise DataError(f"{images.source} has fewer than 2 readable {images.split} images per side; scores need more")
    files = [str(p) for p in images.files_A + images.files_B] or [f"synthetic:{images.seed}:{images.first_index}"]
    key = metrics.features_key(files, images.split, size, limit, len(A), len(B))
    return Prepared(np.stack(A), np.stack(B), na, nb, images.paired, key, images.describe(len(A)))


# --- translation ---------------------------------------------------------------------------------
def translate_batch(net, images: np.ndarray, *, batch_size: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 NHWC through a translation generator (on its device), in eval mode; the dropout noise
    of image ``i`` is drawn from seed ``seed + i`` (repeatable, as ``translate run --seed``)."""
    import torch

    from .nn.layers import seeded_noise
    from .images import to_float, to_uint8

    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(to_float(images[i:i + batch_size])).to(device)
                seeds = torch.arange(seed + i, seed + i + len(x), dtype=torch.int64, device=device)
                with seeded_noise(net, True, seeds):
                    out.append(to_uint8(net(x).float()))
    finally:
        net.train(was_training)
    return np.concatenate(out)


def score_set(fake: np.ndarray, real: np.ndarray, *, inception: metrics.InceptionFeatures | None,
              real_key: str | None = None, target: np.ndarray | None = None) -> dict[str, Any]:
    """Scores of ``fake`` images: paired metrics against ``target`` (aligned with ``fake``) and
    FID / KID against the set ``real`` when ``inception`` is given (real features cached under
    ``real_key``)."""
    out: dict[str, Any] = {"n": int(len(fake))}
    if target is not None:
        per = metrics.paired_scores(fake, target)
        out.update({k: float(np.mean(v)) for k, v in per.items()})
        out["per_image"] = {k: [float(x) for x in v] for k, v in per.items()}
    if inception is not None:
        compute = lambda: inception(real)  # noqa: E731
        real_f = metrics.cached_features(f"{real_key}-{inception.id}", compute) if real_key else compute()
        fake_f = inception(fake)
        out["fid"] = metrics.fid(fake_f, real_f)
        k, k_std = metrics.kid(fake_f, real_f, subsets=KID_SUBSETS)
        out["kid"], out["kid_std"] = k, k_std
        out["n_real"] = int(len(real))
    return out


def directions_of(cfg, direction: str | None) -> list:
    """The translations (``models.Translation``) a run is scored in: all its family offers, or the one
    ``direction``."""
    from .models import family_of

    offered = family_of(cfg).translations(cfg)
    if direction is not None and direction not in [t.direction for t in offered]:
        raise ConfigError(f"this {cfg.train.model} run translates {', '.join(t.direction for t in offered)}; "
                          f"--direction {direction} needs a run trained that way")
    return [t for t in offered if direction in (None, t.direction)]


class TranslationScorer:
    """Scores translation generators on a prepared split, in every direction the run has."""

    def __init__(self, cfg, data: Prepared, *, inception: metrics.InceptionFeatures | None,
                 direction: str | None = None, batch_size: int = 8, seed: int = 0) -> None:
        self.cfg, self.data, self.inception = cfg, data, inception
        self.directions = directions_of(cfg, direction)
        self.batch_size, self.seed = batch_size, seed

    def _sides(self, tr) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of a translation."""
        return (self.data.A, self.data.B) if tr.source == "A" else (self.data.B, self.data.A)

    def __call__(self, generators) -> dict[str, dict[str, Any]]:
        results = {}
        for tr in self.directions:
            x, y = self._sides(tr)
            fake = translate_batch(generators[tr.generator], x, batch_size=self.batch_size, seed=self.seed)
            results[tr.direction] = score_set(fake, y, inception=self.inception,
                                              real_key=f"{self.data.key}-{tr.target}",
                                              target=y if self.data.paired else None)
        return results

    def gallery(self, generators, n: int = 8) -> dict[str, np.ndarray]:
        """Rows of a before / after grid (uint8 NHWC): input, output and (when paired) target, per direction."""
        rows = {}
        for tr in self.directions:
            x, y = self._sides(tr)
            rows[f"input {tr.source}"] = x[:n]
            rows[tr.direction] = translate_batch(generators[tr.generator], x[:n], batch_size=self.batch_size,
                                                 seed=self.seed)
            if self.data.paired:
                rows[f"target {tr.target}"] = y[:n]
        return rows


# --- noise-to-image --------------------------------------------------------------------------------
class SampleScorer:
    """Scores a dcgan / cgan generator's samples against held-out real images: FID / KID, and for
    a cgan the digit classifier's class accuracy and per-class Frechet distance."""

    def __init__(self, cfg, real: np.ndarray, real_labels: np.ndarray | None, classes: list[str], *, n: int,
                 inception: metrics.InceptionFeatures | None, real_key: str, classifier=None, seed: int = 0) -> None:
        self.cfg, self.real, self.real_labels, self.classes = cfg, real, real_labels, classes
        self.n, self.inception, self.real_key, self.classifier, self.seed = n, inception, real_key, classifier, seed

    def samples(self, net, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` (default: as many as the real images) uint8 samples, and their labels (cgan: the
        classes in turn)."""
        from . import sampling
        from .images import to_uint8

        gen = sampling.from_net(net, self.cfg.model, self.classes, "run")
        plan = sampling.plan(gen, n or self.n, seed=self.seed)
        was_training = net.training
        net.eval()
        try:
            fake = gen(plan.latent, plan.label, plan.seeds)
        finally:
            net.train(was_training)
        return to_uint8(fake), plan.label

    def __call__(self, generators) -> dict[str, dict[str, Any]]:
        fake, labels = self.samples(generators["G"])
        scores = score_set(_rgb(fake), _rgb(self.real), inception=self.inception, real_key=self.real_key)
        if self.classifier is not None and labels is not None:
            scores.update(class_scores(self.classifier, fake, labels, self.real, self.real_labels, self.classes))
        return {"samples": scores}

    def gallery(self, generators, n: int = 8) -> dict[str, np.ndarray]:
        """Rows of samples: ``n`` per class (the first 10 classes) for a cgan, else 4 rows of ``n``."""
        k = min(len(self.classes), 10)  # classes are given for a cgan only
        fake, labels = self.samples(generators["G"], n * k if k else 4 * n)
        if labels is None:
            return {f"samples {r + 1}": fake[r * n:(r + 1) * n] for r in range(4)}
        return {f"class {self.classes[c]}": fake[labels == c][:n] for c in range(k)}


def _rgb(images: np.ndarray) -> np.ndarray:
    return images if images.shape[-1] == 3 else np.repeat(images[..., :1], 3, axis=-1)


def class_scores(classifier, fake: np.ndarray, labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                 classes: list[str]) -> dict[str, Any]:
    """The classifier's class accuracy of conditioned samples (and per class), the within-class
    variety of the samples relative to the held-out reals of their class (``metrics.class_variety``),
    and the Frechet distance between classifier features of each class's samples and its held-out
    reals."""
    from .classifier import predict
    from .images import to_float

    fake_logits, fake_f = predict(classifier, to_float(fake))
    _, real_f = predict(classifier, to_float(real))
    k = len(classes)
    per_fd = []
    for c in range(k):
        a, b = fake_f[labels == c], real_f[real_labels == c]
        per_fd.append(metrics.frechet_distance(*metrics.feature_stats(a), *metrics.feature_stats(b))
                      if len(a) >= 2 and len(b) >= 2 else float("nan"))
    variety, per_variety = metrics.class_variety(fake_f, labels, real_f, real_labels, k)
    return {"class_accuracy": metrics.class_accuracy(fake_logits, labels),
            "per_class_accuracy": dict(zip(classes, metrics.per_class_accuracy(fake_logits, labels, k))),
            "class_variety": variety, "per_class_variety": dict(zip(classes, per_variety)),
            "classifier_fd": metrics.frechet_distance(*metrics.feature_stats(fake_f), *metrics.feature_stats(real_f)),
            "per_class_classifier_fd": dict(zip(classes, per_fd))}


# --- building scorers for a run ----------------------------------------------------------------
def load_inception(path: str | Path | None, needed: bool, device: str = "cpu") -> metrics.InceptionFeatures | None:
    return metrics.InceptionFeatures.load(path, device) if needed else None


def build_scorer(cfg, *, split: str = "val", data: str | Path | None = None, direction: str | None = None,
                 limit: int | None = None, inception: str | Path | None = None, fid: bool = True,
                 classify: bool = True, seed: int = 0, device: str = "cpu", checkpoint=None, dataset=None):
    """The scorer of a run's config on a split of its data (or of ``data``), and a description.
    ``fid``: load the Inception network for FID / KID; ``classify``: judge cgan samples with the
    digit classifier (trained on the data's training split the first time). ``dataset``: the
    training run's own data set (``TranslationDataset`` or ``GenerationDataset``), whose held-out
    images are then used without reading the data again. ``checkpoint`` (a ``run.Checkpoint``): the
    held-out files it records must still be the data's ``val`` split."""
    from .models import family_of

    t = cfg.train
    fam = family_of(cfg)
    source = str(data) if data is not None else t.data
    net = load_inception(inception, fid, device)
    if fam.generative:
        return _sample_scorer(cfg, source, limit, net, seed, classify,
                              held=None if dataset is None else dataset.held_out)
    from .data import TranslationDataset, detect_layout

    if dataset is None:
        if source is not None and not Path(source).exists():
            raise DataError(f"the data {source} is not there any more; give its new place with --data DIR")
        dataset = TranslationDataset(detect_layout(source), size=t.size, load_size=t.load_size, flip=False,
                                     unpaired=fam.data_of(cfg) == "unpaired", synthetic_count=t.synthetic_count,
                                     seed=t.seed, max_bad_fraction=1.0, holdout=t.holdout)
    images = dataset.split(split)
    if images is None:
        folder = " (or add a val/ folder beside train/)" if dataset.layout.kind == "aligned" else ""
        hint = (f"train with --holdout N to hold the last N images out as validation{folder}"
                if split == "val" else "add test/ (or testA/ + testB/) to the data, or use --split val")
        raise DataError(f"{source} has no {split} images: {hint}")
    if checkpoint is not None and data is None and split == "val" and t.holdout:
        checkpoint.check_holdout(images)
    prepared = prepare(images, t.size, limit)
    return TranslationScorer(cfg, prepared, inception=net, direction=direction, seed=seed), prepared.description


def _sample_scorer(cfg, source: str, limit: int | None, net, seed: int, classify: bool, held=None):
    from .data.arrays import load_image_set
    from .data.arrays import split as split_set
    from .data.folders import GenerationDataset
    from .images import to_uint8

    t = cfg.train
    if held is None:
        classes_hint = ()
        if t.pair:
            from .data import pairs

            classes_hint = pairs.get(t.pair).classes
        _, held = split_set(load_image_set(source, classes=classes_hint, max_bad_fraction=1.0))
    if held is None or not len(held):
        raise DataError(f"{source} has no held-out images to score samples against (unlabelled folders are all "
                        f"for training); score two folders with 'translate eval --real DIR --fake DIR'")
    ds = GenerationDataset(held, size=t.size, channels=cfg.model.channels or held.channels)
    count = len(held) if limit is None else min(limit, len(held))
    idx = np.linspace(0, len(held) - 1, count).round().astype(int) if count < len(held) else np.arange(len(held))
    real = to_uint8(np.stack([ds[(int(i), 0)]["image"].numpy() for i in idx]))
    from .models import family_of

    conditional = family_of(cfg).conditional
    labels = held.labels[idx] if held.labelled and conditional else None
    classes = list(held.classes) if held.labelled and conditional else []
    classifier = None
    if conditional and classify:
        from .classifier import N_DIGITS, digit_classifier

        if len(classes) == N_DIGITS:
            classifier, _ = digit_classifier(source, quiet=True)
        else:
            log.info("no class scores: the project's classifier judges 10-class (digit) data, %s has %d classes",
                     source, len(classes))
    key = hashlib.sha256(real.tobytes() + str(real.shape).encode()).hexdigest()[:20]  # the very pixels scored
    n = max(count, 2)
    description = f"{count} held-out images of {source} against {n} samples"
    return SampleScorer(cfg, real, labels, classes, n=n, inception=net, real_key=key, classifier=classifier,
                        seed=seed), description


# --- running it --------------------------------------------------------------------------------
def evaluate_run(source: str | Path, *, data: str | Path | None = None, split: str = "val",
                 direction: str | None = None, limit: int | None = None, inception: str | Path | None = None,
                 fid: bool = True, write: bool = True) -> dict[str, Any]:
    """Score the generators (EMA weights when kept) of a run's latest checkpoint or of a checkpoint
    folder, and write ``RUN/eval.json`` (``eval-<checkpoint>.json`` for another checkpoint)."""
    from .run import open_checkpoint

    ckpt = open_checkpoint(source)
    every = ckpt.generators()
    loaded = next(iter(every.values()))
    cfg = loaded.cfg
    scorer, description = build_scorer(cfg, split=split, data=data, direction=direction, limit=limit,
                                       inception=inception, fid=fid, seed=cfg.train.seed, checkpoint=ckpt)
    results = scorer({name: g.net for name, g in every.items()})
    report = {
        "run": str(loaded.run_dir), "checkpoint": ckpt.name, "step": loaded.step, "ema": loaded.ema,
        "model": cfg.train.model, "split": split, "data": str(data or cfg.train.data or "synthetic"),
        "images": description, "size": cfg.train.size, "fid_network": network_note(scorer.inception),
        "results": results,
    }
    if write:
        path = ckpt.run.eval_path(ckpt)
        atomic_write_text(path, json.dumps(json_safe(report), indent=2) + "\n")
        report["written"] = str(path)
    return report


def evaluate_folders(real: str | Path, fake: str | Path, *, inception: str | Path | None = None,
                     fid: bool = True, size: int | None = None) -> dict[str, Any]:
    """Score the images of ``fake`` against those of ``real``: FID / KID over the two sets, and L1 /
    PSNR / SSIM over the files with equal names (relative path without extension). A fake of
    another size than its real image is resized to it (all pairs go to ``size``, or 256 x 256 when
    the real images differ in size among themselves)."""
    from .data.scan import scan_images
    from .images import load_rgb

    real, fake = Path(real), Path(fake)
    rf, ff = scan_images(real, max_bad_fraction=1.0), scan_images(fake, max_bad_fraction=1.0)
    if len(rf) < 2 or len(ff) < 2:
        raise DataError(f"need at least 2 images in each of {real} and {fake}")

    def read(paths: list[Path]) -> tuple[list[np.ndarray], list[Path]]:
        imgs, kept = [], []
        for p in paths:
            try:
                imgs.append(load_rgb(p)), kept.append(p)
            except (OSError, ValueError) as exc:
                log.warning("skipping %s: not a readable image (%s)", p, type(exc).__name__)
        return imgs, kept

    r_imgs, rf = read(rf)
    f_imgs, ff = read(ff)
    out: dict[str, Any] = {"real": str(real), "fake": str(fake), "n_real": len(r_imgs), "n_fake": len(f_imgs)}
    key = lambda p, base: p.relative_to(base).with_suffix("").as_posix()  # noqa: E731
    by_fake = {key(p, fake): img for p, img in zip(ff, f_imgs)}
    pairs = [(img, by_fake[key(p, real)]) for p, img in zip(rf, r_imgs) if key(p, real) in by_fake]
    if pairs:
        tgt = [t for t, _ in pairs]
        same = len({t.shape for t in tgt}) == 1
        side = size or (None if same else 256)
        if side is not None:
            tgt_a = np.stack([resize(t, side) for t in tgt])
            out_a = np.stack([resize(o, side) for _, o in pairs])
        else:
            tgt_a = np.stack(tgt)
            out_a = np.stack([resize(o, t.shape[:2]) for t, o in pairs])
        per = metrics.paired_scores(out_a, tgt_a)
        out["paired"] = {"n": len(pairs), **{k: float(np.mean(v)) for k, v in per.items()}}
    net = load_inception(inception, fid)
    if net is not None:
        rf_feat = metrics.cached_features(f"{metrics.features_key(rf, 'folder')}-{net.id}",
                                          lambda: _features_each(net, r_imgs))
        ff_feat = _features_each(net, f_imgs)
        out["fid"] = metrics.fid(ff_feat, rf_feat)
        out["kid"], out["kid_std"] = metrics.kid(ff_feat, rf_feat, subsets=KID_SUBSETS)
    out["fid_network"] = network_note(net)
    return out


def _features_each(net: metrics.InceptionFeatures, images: list[np.ndarray]) -> np.ndarray:
    """Features of images of mixed sizes (each resized to 299 on its own, as clean-fid does)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    out = np.empty((len(images), 2048))
    for idx in by_shape.values():
        out[idx] = net(np.stack([images[i] for i in idx]))
    return out


def network_note(net: metrics.InceptionFeatures | None) -> str:
    if net is None:
        return "not computed (FID / KID skipped)"
    return (f"2015 FID Inception (TF port, {net.path.name}), 2048-d pool features; images resized to 299 with "
            f"PIL bicubic per channel in float (clean-fid 'clean')")


# --- a table for the terminal ------------------------------------------------------------------
def format_table(results: dict[str, dict[str, Any]]) -> str:
    cols = metrics.metrics_in(results)
    rows = [["", "n"] + [m.label for m in cols]]
    for name, r in results.items():
        rows.append([name, str(r.get("n", ""))] + [m.format(r) for m in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def metric_value(results: dict[str, dict[str, Any]], metric: str) -> float:
    """One number for picking the best checkpoint: the mean of ``metric`` over the directions."""
    values = [r[metric] for r in results.values() if r.get(metric) is not None]
    if not values:
        raise ConfigError(f"eval_metric {metric} was not computed for this run (paired metrics need ground truth; "
                          f"FID / KID the Inception network)")
    return float(np.mean(values))
