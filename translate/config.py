"""Configuration: one dataclass per model family plus the shared :class:`TrainConfig`.

Defaults follow the reference recipes (Zhu et al. 2017 for CycleGAN, Isola et al. 2017 for
pix2pix, Radford et al. 2016 for DCGAN). A YAML file (``--config``) holds any of these fields as
flat keys; command-line options override it. The run directory keeps the result as ``config.json``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "bf16", "fp16", "off")
LR_SCALINGS = ("none", "linear", "sqrt")  # the learning rate under torchrun: x1, x world size, x its root
ON_NAN = ("rollback", "stop", "warn")  # what a NaN or infinite loss does (engine/guard.py)


@dataclass
class NetworkConfig:
    """Fields every translation family shares; each family sets its own defaults below."""

    generator: str = "resnet_9blocks"  # resnet_9blocks | resnet_6blocks | unet
    discriminator: str = "patch"  # patch (n_layers deep; 3 = 70x70) | pixel (1x1)
    ngf: int = 64
    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"  # instance | batch | none
    d_norm: str | None = None  # the discriminator's, when it differs (e.g. none or instance with wgan-gp)
    init: str = "normal"  # normal | xavier | kaiming | orthogonal
    init_gain: float = 0.02
    upsample: str = "transpose"  # transpose | resize (bilinear + conv, no checkerboard)
    antialias: bool = False  # ResNet generator: blur-pool downsampling and blur upsampling (CUT's; not CycleGAN's)
    dropout: float = 0.0  # NoiseDropout probability in the generator
    gan_loss: str = "lsgan"
    pool_size: int = 50  # replay buffer of past fakes per discriminator; 0 disables
    in_channels: int = 3
    out_channels: int = 3
    width: float = 1.0  # the generator's channel counts times this (ngf x width): small students (translate distill)
    blocks: str = "standard"  # standard | mobile: depthwise-separable convolutions in the generator's blocks


@dataclass
class CycleGANConfig(NetworkConfig):
    """CycleGAN: G_AB, G_BA (ResNet), D_A, D_B (70x70 PatchGAN), LSGAN, cycle and identity losses."""

    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # scales lambda_cycle, as in the reference


@dataclass
class Pix2PixConfig(NetworkConfig):
    """pix2pix: U-Net generator, conditional PatchGAN on (input, output), GAN + lambda_L1 * L1.

    ``gan_loss`` defaults to the minimax game's BCE with the non-saturating generator loss, which is
    what the paper and reference train with; ``minimax`` gives the saturating generator loss.
    """

    generator: str = "unet"
    norm: str = "batch"
    dropout: float = 0.5  # in the U-Net's inner decoder blocks: the generator's noise
    gan_loss: str = "nonsaturating"
    pool_size: int = 0
    lambda_l1: float = 100.0
    direction: str = "AtoB"  # AtoB | BtoA
    num_D: int = 1  # pix2pixHD: PatchGANs at 1, 1/2, 1/4 ... scale (average-pooled inputs), losses summed
    lambda_feat: float = 0.0  # pix2pixHD: L1 between D's activations on real and fake pairs, for G (it uses 10)


@dataclass
class DCGANConfig:
    """DCGAN (Radford et al. 2016): latent -> image, and the stabilisers of docs/stabilisers.md."""

    latent_dim: int = 100
    latent: str = "normal"  # normal | spherical (z on the sphere of radius sqrt(latent_dim))
    ngf: int = 64
    ndf: int = 64
    channels: int = 0  # image channels; 0: from the data (1 for MNIST)
    norm: str = "batch"  # batch | none (both networks)
    d_norm: str | None = None  # the discriminator's, when it differs (e.g. none with wgan-gp)
    init: str = "normal"
    init_gain: float = 0.02
    gan_loss: str = "nonsaturating"
    pool_size: int = 0  # experience replay of past fakes shown to D; 0 disables
    dropout: float = 0.0  # NoiseDropout in the generator, on at train and test time
    noise_injection: float = 0.0  # initial strength of Gaussian noise injected into generator layers
    pixel_norm: bool = False
    equalized_lr: bool = False
    minibatch_std: int = 0  # group size of the minibatch standard deviation feature; 0 disables
    minibatch_discrimination: int = 0  # kernels of minibatch discrimination; 0 disables
    progressive: bool = False  # progressive growing
    progressive_start: int = 0  # resolution to grow from (4 or 8; 7 or 14 for 28 px); 0: the smallest
    progressive_steps: int = 500  # steps to fade in each resolution, and to train it before the next


@dataclass
class CGANConfig(DCGANConfig):
    """Class-conditional DCGAN: the generator conditioned by a label embedding concatenated to z (or
    a class-conditional batch norm in every layer), the discriminator by projection (Miyato &
    Koyama 2018). Concatenation is the default: measured on MNIST, a cbn generator still ignored
    its label after 500 steps (its per-class scales move by at most lr per step from 1), while the
    embedding concatenated to z steers the very first layer from the start."""

    n_classes: int = 0  # 0: from the data
    conditioning: str = "concat"  # concat | cbn
    embed_dim: int = 50  # label embedding size for concat
    aux_classifier: float = 0.0  # weight of an auxiliary classification loss (AC-GAN); 0: projection only
    aux_classifier_end: float | None = None  # G's weight of it at the end, reached linearly; None: constant
    twin_classifier: bool = False  # TAC-GAN: a twin classifier on fakes removes AC-GAN's bias (needs aux_classifier)
    class_minibatch_std: bool = False  # D sees the feature spread among the batch's images of each class


@dataclass
class TrainConfig:
    """What the trainer and data pipeline need, shared by every family."""

    model: str = "cyclegan"
    data: str | None = None  # None: the embedded synthetic data set
    pair: str | None = None  # the named data set (translate data list) whose recipe and data this run uses
    size: int = 256  # crop size fed to the networks
    load_size: int | None = None  # resize to this before the random crop; None: size * 286 / 256; 0: no resize
    flip: bool = True
    batch_size: int = 1
    steps: int | None = None  # generator updates; default from epochs
    epochs: int | None = None  # default 200 (100 constant + 100 decaying), as the reference
    lr: float = 2e-4
    lr_d: float | None = None  # discriminator learning rate; None: same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    d_optimizer: str = "adam"  # adam | sgd (Adam for G + SGD for D)
    decay_from: float = 0.5  # fraction of the run after which the learning rate decays linearly to 0
    n_critic: int = 1  # discriminator steps per generator step
    amp: str = "auto"  # auto (CUDA: bf16 if supported else fp16) | bf16 | fp16 | off
    channels_last: bool | None = None  # NHWC activations (faster convolutions on tensor cores); None: on CUDA
    compile: bool = False  # torch.compile the networks (slower start, faster steps)
    lr_scaling: str = "none"  # under torchrun: none | linear | sqrt (x world size, x its square root)
    ema: float = 0.0  # EMA decay for a copy of the generators; 0 disables (e.g. 0.999)
    seed: int = 0
    device: str = "auto"
    workers: int = -1  # data-loader processes; -1: chosen from the CPU count
    log_every: int = 10
    sample_every: int = 100
    checkpoint_every: int = 500
    checkpoint_minutes: float = 15.0  # also checkpoint when this much wall-clock passed since the last one; 0: off
    keep_last: int = 3
    on_nan: str = "rollback"  # a NaN / infinite loss: rollback (to the last checkpoint, lr halved) | stop | warn
    log: str | None = None  # tensorboard: TensorBoard event files in RUN/tensorboard/ beside metrics.jsonl
    n_samples: int = 4  # images in the sample grids
    instance_noise: float = 0.0  # initial std of noise on D's inputs (images in [-1, 1])
    instance_noise_steps: int | None = None  # anneal to 0 over this many steps; None: half the run
    label_smoothing: float = 0.0
    noisy_labels: bool = False
    label_flip: float = 0.0
    # small-data stabilisers of the discriminator (docs/stabilisers.md)
    spectral_norm: bool = False  # spectral normalisation of the discriminators' convolutions and linears
    spectral_norm_g: bool = False  # ... and of the generators' (folded into plain weights for export)
    r1_gamma: float = 0.0  # weight of the R1 penalty on D's gradient at real images; 0 disables
    r1_every: int = 16  # lazy R1: computed every N steps, scaled by N
    d_augment: str | None = None  # differentiable augmentation of D's inputs: color,translation,cutout
    d_augment_p: float | None = None  # probability of each transform per image (None: 1); adaptive: its start (0)
    ada_target: float = 0.0  # adaptive augmentation: keep E[sign(D(real))] at this (0.6); 0: fixed d_augment_p
    ada_interval: int = 4  # steps between adjustments of the adaptive probability
    ada_steps: int = 500  # steps the adaptive probability needs to cross from 0 to 1
    lecam_weight: float = 0.0  # weight of the LeCam regulariser of D's outputs; 0 disables
    lecam_decay: float = 0.99  # decay of its EMA anchors
    stop_on_failure: bool = False
    grad_limit: float = 100.0  # health monitor: gradient norm that, with a 10x jump, counts as exploding
    max_bad_fraction: float = 0.1  # more unreadable images than this fraction is an error
    synthetic_count: int = 200  # pairs in the embedded data set
    swap_every: int = 0  # every N steps, play against a past G or D snapshot for swap_steps; 0 disables
    swap_steps: int = 5
    swap_history: int = 4  # snapshots kept (in the checkpoints too)
    recipe: str | None = None  # the --recipe this run started from (a record; its options are in the config)
    holdout: int = 0  # hold the last N images (by file name) out of training: the run's validation split
    eval_every: int = 0  # score a fixed validation subset every N steps and keep the best checkpoint; 0: off
    eval_metric: str = "fid"  # what "best" means: fid | kid | l1 | psnr | ssim | class_accuracy
    eval_count: int = 50  # validation images (or samples) scored by --eval-every
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes of training (scoring not counted)


@dataclass
class RunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = field(default_factory=CycleGANConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"train": dataclasses.asdict(self.train), "model": dataclasses.asdict(self.model)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def coerce(name: str, value: Any, annotation: str, source: str) -> Any:
    """Convert ``value`` to a field's type (``int``, ``float``, ``bool``, ``str``, ``X | None``);
    YAML reads ``1e-4`` as a string and ``--set`` values arrive as YAML too."""
    optional = annotation.endswith("| None")
    kind = annotation.split("|")[0].strip()
    if isinstance(value, str) and kind == "str" and not optional and value.strip().lower() == "none":
        return value.strip().lower()  # a choice named none (norm=none), not a missing value
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{source}: {name} needs a value ({kind})")
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("true", "yes", "on", "1"):
                return True
            if str(value).strip().lower() in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(str(value)) if isinstance(value, str) else int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be {'an' if kind == 'int' else 'a'} {kind}"
                          f"{' or none' if optional else ''}, got {value!r}") from None
    return value


def build_dataclass(cls: type, values: dict[str, Any], source: str) -> Any:
    """``cls(**values)`` with each value converted to its field's type; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"valid: {', '.join(sorted(fields))}")
    return cls(**{k: coerce(k, v, str(fields[k].type), source) for k, v in values.items()})


def split_options(options: dict[str, Any], family_config: type, model: str,
                  source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat options into TrainConfig fields and the fields of the family's config dataclass
    ``family_config``; unknown keys are an error."""
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    model_names = {f.name for f in dataclasses.fields(family_config)}
    train, fam, unknown = {}, {}, []
    types = {f.name: str(f.type) for f in (*dataclasses.fields(TrainConfig), *dataclasses.fields(family_config))}
    for key, value in options.items():
        k = key.replace("-", "_")
        if k in train_names:
            train[k] = coerce(k, value, types[k], source)
        elif k in model_names:
            fam[k] = coerce(k, value, types[k], source)
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(sorted(unknown))} for {model}; "
                          f"see 'translate train --help' and docs/configuration.md")
    return train, fam


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; --config takes a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save the config file as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}{where} is not valid YAML; fix the syntax there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option: value pairs")
    if isinstance(data.get("train"), dict) and isinstance(data.get("model"), dict):  # a run's config.json
        data = {**data["train"], **data["model"]}
    return data


def need(ok: bool, msg: str) -> None:
    """Raise ConfigError(``msg``) unless ``ok``: one line naming the option and the fix."""
    if not ok:
        raise ConfigError(msg)


def check_train(t: TrainConfig) -> None:
    """Check the shared TrainConfig's ranges and choices (the family's own: ``models.validate``)."""
    from .metrics import EVAL_METRICS

    need(t.device in DEVICES or t.device.startswith("cuda:"), f"unknown device {t.device!r}; use auto, cpu or cuda")
    need(t.amp in AMP_MODES, f"unknown amp mode {t.amp!r}; choose one of {', '.join(AMP_MODES)}")
    need(t.lr_scaling in LR_SCALINGS, f"unknown lr_scaling {t.lr_scaling!r}; choose one of {', '.join(LR_SCALINGS)}")
    need(t.size >= 16 and t.size % 4 == 0, f"--size must be a multiple of 4 and at least 16, got {t.size}")
    need(t.batch_size >= 1, "--batch-size must be at least 1")
    need(t.steps is None or t.steps >= 1, "--steps must be at least 1")
    need(t.epochs is None or t.epochs >= 1, "--epochs must be at least 1")
    need(t.n_critic >= 1, "n_critic must be at least 1")
    need(t.lr > 0 and (t.lr_d is None or t.lr_d > 0), "learning rates must be positive")
    need(0.0 <= t.decay_from <= 1.0, "decay_from must be in [0, 1]")
    need(t.d_optimizer in ("adam", "sgd"), f"d_optimizer must be adam or sgd, not {t.d_optimizer!r}")
    need(0.0 <= t.ema < 1.0, "ema must be in [0, 1)")
    need(t.n_samples >= 1, "n_samples must be at least 1")
    need(min(t.log_every, t.sample_every, t.checkpoint_every) >= 1, "log/sample/checkpoint intervals must be >= 1")
    need(t.load_size is None or t.load_size == 0 or t.load_size >= t.size,
         f"load_size ({t.load_size}) must be 0 (no resize) or at least --size ({t.size})")
    need(t.swap_every >= 0 and t.swap_steps >= 1 and t.swap_history >= 2,
         "swap_every must be >= 0, swap_steps >= 1 and swap_history >= 2")
    need(t.swap_every == 0 or t.swap_steps < t.swap_every, "swap_steps must be smaller than swap_every")
    need(t.holdout >= 0 and t.eval_every >= 0, "--holdout and --eval-every must be 0 or more")
    need(t.eval_count >= 2, "eval_count must be at least 2 (FID and KID need two images)")
    need(t.checkpoint_minutes >= 0, "checkpoint_minutes must be 0 (off) or more")
    need(t.max_minutes >= 0, "--max-minutes must be 0 (no limit) or more")
    need(t.on_nan in ON_NAN, f"--on-nan must be one of {', '.join(ON_NAN)}, not {t.on_nan!r}")
    need(t.log in (None, "tensorboard"), f"--log takes tensorboard (or nothing), not {t.log!r}")
    check_stabilisers(t)
    need(t.eval_metric in EVAL_METRICS, f"unknown eval_metric {t.eval_metric!r}; choose one of "
                                        f"{', '.join(EVAL_METRICS)}")


def check_stabilisers(t: TrainConfig) -> None:
    """The discriminator's small-data stabilisers: R1, augmentation, LeCam."""
    from .engine.augment import POLICIES, parse_policy

    need(t.r1_gamma >= 0 and t.r1_every >= 1, "r1_gamma must be >= 0 and r1_every at least 1")
    try:
        parse_policy(t.d_augment)
    except ValueError as exc:
        need(False, f"d_augment: {exc} (comma-separated, e.g. d_augment=color,translation,cutout)")
    need(t.d_augment_p is None or 0.0 <= t.d_augment_p <= 1.0, "d_augment_p must be in [0, 1]")
    need(0.0 <= t.ada_target < 1.0, "ada_target must be in [0, 1) (0.6 is usual; 0 turns adaptation off)")
    need(t.ada_interval >= 1 and t.ada_steps >= 1, "ada_interval and ada_steps must be at least 1")
    need(not t.ada_target or bool(t.d_augment), f"ada_target adapts d_augment's probability: give d_augment too "
                                                f"(e.g. d_augment={','.join(POLICIES)})")
    need(t.lecam_weight >= 0 and 0.0 <= t.lecam_decay < 1.0, "lecam_weight must be >= 0 and lecam_decay in [0, 1)")


def check_adversarial(t: TrainConfig, gan_loss: str) -> None:
    """The adversarial loss, and the label tricks it allows."""
    from .engine.losses import GAN_LOSSES, TARGET_LOSSES

    need(gan_loss in GAN_LOSSES, f"unknown gan_loss {gan_loss!r}; choose one of {', '.join(GAN_LOSSES)}")
    if t.label_smoothing or t.noisy_labels or t.label_flip:
        need(gan_loss in TARGET_LOSSES, f"label smoothing / noisy labels / label flips need gan_loss "
                                        f"{', '.join(TARGET_LOSSES)}, not {gan_loss}")
    need(not t.ada_target or gan_loss not in ("wgan", "wgan-gp"),
         f"adaptive augmentation reads the sign of D's verdict on real images, which a {gan_loss} critic does not "
         f"give; use a fixed d_augment_p (drop ada_target) or another gan_loss")


def check_network(t: TrainConfig, m: NetworkConfig) -> None:
    """The options of the ResNet / U-Net generators and PatchGAN discriminators (NetworkConfig)."""
    from .nn.layers import INITS, NORMS, UPSAMPLES

    need(m.norm in NORMS, f"unknown norm {m.norm!r}; choose one of {', '.join(NORMS)}")
    need(m.d_norm is None or m.d_norm in NORMS, f"unknown d_norm {m.d_norm!r}; choose one of {', '.join(NORMS)}")
    need(m.init in INITS, f"unknown init {m.init!r}; choose one of {', '.join(INITS)}")
    need(m.upsample in UPSAMPLES, f"unknown upsample {m.upsample!r}; choose one of {', '.join(UPSAMPLES)}")
    need(m.generator in ("resnet_9blocks", "resnet_6blocks", "unet"),
         f"unknown generator {m.generator!r}; choose resnet_9blocks, resnet_6blocks or unet")
    need(m.discriminator in ("patch", "pixel"), f"unknown discriminator {m.discriminator!r}; choose patch or pixel")
    need(m.width > 0, f"width must be positive (a fraction or multiple of the generator's channels), not {m.width}")
    need(m.blocks in ("standard", "mobile"), f"blocks must be standard or mobile, not {m.blocks!r}")
    if m.antialias:
        need(m.generator.startswith("resnet_"), f"antialias is an option of the ResNet generators, not {m.generator}; "
                                                 f"drop it or choose generator=resnet_9blocks")
        need(m.upsample == "transpose", "antialias brings its own upsampling (blur, then convolution); "
                                        "drop upsample=resize")
    if m.generator == "unet":
        need(t.size >= 32 and t.size & (t.size - 1) == 0,
             f"the U-Net generator needs a power-of-two --size of at least 32, got {t.size}")
    need(m.in_channels == 3 and m.out_channels == 3,
         "in_channels and out_channels must be 3: the data pipeline reads every image as RGB")
