"""The reference implementation of CUT and FastCUT (taesungp/contrastive-unpaired-translation), run
from its own code, for the same-run comparisons of ``bench/train_speed.py`` (cases
``cut-reference`` and ``fastcut-reference``).

Its code is not part of this project: give the folder of a checkout (``--reference-cut DIR`` there,
``$CUT_REFERENCE``, or ``--ref`` here). Get one with, e.g.::

    git clone https://github.com/taesungp/contrastive-unpaired-translation /tmp/cut-ref

It needs torch, torchvision, numpy and Pillow (translate's environment has them); nothing of its
visualiser (visdom, dominate) is imported. The iteration timed is exactly the reference's own
training step, ``model.set_input(data); model.optimize_parameters()`` (what its train.py times as
``optimize_time``), after its ``data_dependent_initialize`` and ``setup``, on the CPU
(``--gpu_ids -1``) or a GPU. Batches are random images in memory, as in the other cases of
train_speed.py, or (``--data DIR``) come from the reference's own unaligned data loader on a
trainA/ + trainB/ folder.

    python bench/reference_cut.py --ref /tmp/cut-ref --mode CUT --iters 3          # one measurement, JSON
    python bench/reference_cut.py --ref /tmp/cut-ref --check                       # our generator == its netG

``--check`` builds the reference's ResNet generator (anti-aliased, as its CUT uses it) and ours with
``antialias`` on, copies the weights across, and compares their outputs and the features at the
reference's ``nce_layers`` 0,4,8,12,16 with ours at input, down1, down2, block1, block5.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))


def reference_dir(path: str | None) -> str:
    path = path or os.environ.get("CUT_REFERENCE")
    if not path or not (Path(path) / "models" / "cut_model.py").is_file():
        sys.exit("the reference CUT code is needed: pass --reference-cut DIR (or set $CUT_REFERENCE) to a checkout of "
                 "taesungp/contrastive-unpaired-translation (git clone https://github.com/taesungp/"
                 "contrastive-unpaired-translation DIR)")
    return str(Path(path).resolve())


@contextlib.contextmanager
def _inside(ref: str):
    """The reference's top-level packages (models, options, data, util) importable, its folder current."""
    before, cwd = list(sys.path), os.getcwd()
    sys.path.insert(0, ref)
    os.chdir(ref)
    try:
        yield
    finally:
        sys.path[:] = before
        os.chdir(cwd)


def build(ref: str, mode: str, size: int, batch: int, device: str, data: str | None, work: str):
    """The reference's CUT model and a batch stream, as its train.py makes them."""
    import torch

    data = str(Path(data).resolve()) if data else None
    with _inside(ref):
        from models import create_model
        from options.train_options import TrainOptions

        gpu = "0" if device == "cuda" else "-1"
        cmd = (f"--dataroot {data or work} --name bench --checkpoints_dir {work} --gpu_ids {gpu} --CUT_mode {mode} "
               f"--crop_size {size} --load_size {round(size * 286 / 256)} --batch_size {batch} --num_threads 0")
        # its CUT_mode presets read sys.argv (modify_commandline_options parses it, not cmd_line): make
        # it the command line its train.py would have, or FastCUT would get CUT's defaults
        argv, sys.argv = sys.argv, ["train.py", *cmd.split()]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # it prints its options
                opt = TrainOptions(cmd_line=cmd).parse()
                model = create_model(opt)
        finally:
            sys.argv = argv
        if data:
            from data import create_dataset

            dataset = create_dataset(opt)

            def stream():
                while True:
                    yield from dataset
        else:
            def stream():
                g = torch.Generator().manual_seed(0)
                while True:
                    yield {"A": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
                           "B": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
                           "A_paths": ["a"] * batch, "B_paths": ["b"] * batch}
        batches = stream()
        with contextlib.redirect_stdout(sys.stderr):
            model.data_dependent_initialize(next(batches))  # creates netF's MLPs and their optimiser
            model.setup(opt)
            model.parallelize()
    return model, batches, opt


def measure_reference(ref: str, mode: str, size: int, batch: int, iters: int, device: str = "cpu",
                      data: str | None = None) -> dict:
    """Seconds per iteration and peak memory of the reference's training step (bench/train_speed.py's
    ``measure``: median of ``iters`` after one warm-up, peak RSS or CUDA memory, FLOPs of one step)."""
    import torch

    sys.path.insert(0, HERE)
    from train_speed import measure

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="cut-ref-") as work:
        model, batches, opt = build(ref, mode, size, batch, device, data, work)

        def step():
            model.set_input(next(batches))
            model.optimize_parameters()

        result = measure(step, iters, torch.device(device))
    params = sum(p.numel() for p in model.netG.parameters())
    preset = {k: getattr(opt, k) for k in ("CUT_mode", "nce_idt", "lambda_NCE", "flip_equivariance", "n_epochs",
                                            "n_epochs_decay", "netF", "num_patches", "nce_layers")}
    return {"case": f"{mode.lower()}-reference", "reference_options": preset, "mode": "fp32", "size": size, "batch": batch, "amp": "off",
            "amp_dtype": "float32", "channels_last": False, "compile": False, "loader": bool(data),
            "winograd": False, "generator_params": params, "reference": ref, **result}


def check_generator(ref: str, size: int = 64) -> dict:
    """Our anti-aliased ResNet generator against the reference's, with the same weights."""
    import functools

    import torch

    from translate.nn import ResnetGenerator

    with _inside(ref):
        from models import networks

        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
        theirs = networks.ResnetGenerator(3, 3, ngf=64, norm_layer=norm, use_dropout=False, n_blocks=9,
                                          no_antialias=False, no_antialias_up=False, opt=None).eval()
    ours = ResnetGenerator(ngf=64, n_blocks=9, antialias=True).eval()
    weights = [v for k, v in theirs.state_dict().items() if not k.endswith("filt")]  # its blur filters are buffers
    mine = list(ours.state_dict())
    assert len(weights) == len(mine), (len(weights), len(mine))
    ours.load_state_dict(dict(zip(mine, weights)))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = (theirs(x) - ours(x)).abs().max().item()
        f_theirs = theirs(x, [0, 4, 8, 12, 16], encode_only=True)
        f_ours = ours.encode(x, ["input", "down1", "down2", "block1", "block5"])
    taps = [(a - b).abs().max().item() for a, b in zip(f_theirs, f_ours)]
    shapes = [list(a.shape) == list(b.shape) for a, b in zip(f_theirs, f_ours)]
    return {"output_max_abs_diff": out, "tap_max_abs_diff": taps, "tap_shapes_equal": all(shapes),
            "parameters": sum(p.numel() for p in ours.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", help="a checkout of taesungp/contrastive-unpaired-translation [$CUT_REFERENCE]")
    ap.add_argument("--mode", default="CUT", choices=["CUT", "FastCUT"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--data", help="trainA/ + trainB/ folder for the reference's own loader [random images]")
    ap.add_argument("--check", action="store_true", help="compare our generator with the reference's instead")
    args = ap.parse_args()
    ref = reference_dir(args.ref)
    sys.path.insert(0, os.path.dirname(HERE))  # translate, from this checkout
    if args.check:
        result = check_generator(ref)
    else:
        result = measure_reference(ref, args.mode, args.size, args.batch, args.iters, args.device, args.data)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
