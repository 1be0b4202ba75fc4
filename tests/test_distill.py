"""translate distill: small students of trained translators, as ordinary runs of the distill family."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, one_line_error
from PIL import Image
from safetensors.torch import load_file

from translate import distill as distill_module
from translate.cli import cli
from translate.config import TrainConfig
from translate.distill import build_config, count_macs, deployed_parameters, distill
from translate.models import build_model
from translate.models.distill import Distill, DistillConfig
from translate.nn.generators import ResnetGenerator, UnetGenerator, tap_features
from translate.run import open_checkpoint
from translate.train import build_config as train_config
from translate.train import train


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def quick_speed(monkeypatch):
    """The comparison's speed turns, shortened: the tests check the table, not the machine."""
    monkeypatch.setattr(distill_module, "SPEED_ROUNDS", 1)
    monkeypatch.setattr(distill_module, "SPEED_SECONDS", 0.0)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained teachers: pix2pix with an EMA copy, and CycleGAN (ResNet-6)."""
    root = tmp_path_factory.mktemp("teachers")
    train(train_config({**TINY, "model": "pix2pix", "steps": 2, "ema": 0.5}), root / "pix2pix", quiet=True)
    train(train_config({**TINY, "model": "cyclegan", "steps": 2, "generator": "resnet_6blocks"}), root / "cyclegan",
          quiet=True)
    return {"pix2pix": root / "pix2pix", "cyclegan": root / "cyclegan"}


@pytest.fixture(scope="module")
def student(teachers, tmp_path_factory) -> Path:
    """The pix2pix teacher distilled at width 0.5 for 2 steps."""
    run = tmp_path_factory.mktemp("students") / "pix2pix-w0.5"
    distill(build_config(teachers["pix2pix"], width=0.5, steps=2), run, quiet=True)
    return run


# --- the student's cost, counted by hand --------------------------------------------------------------
def _student(blocks: str, model: str = "cyclegan") -> torch.nn.Module:
    """The first student of a distillation (width 0.5) of a config with ngf 8: CycleGAN's G_AB
    (ResNet-6, instance norm) at 16 px, or pix2pix's G (U-Net, batch norm) at 32 px."""
    size = 16 if model == "cyclegan" else 32
    teacher = train_config({"model": model, "size": size, "ngf": 8, "generator": "resnet_6blocks"}
                           if model == "cyclegan" else {"model": model, "size": size, "ngf": 8})
    cfg = DistillConfig(teacher_config=teacher.to_dict(), width=0.5, blocks=blocks)
    return next(iter(Distill(cfg, TrainConfig(model="distill", size=size)).generators.values()))


def test_a_students_macs_and_parameters_match_a_hand_count():
    # width 0.5 of ngf 8: 4, 8 and 16 channels; 16 px in, 4 x 4 in the residual blocks.
    # convolutions (with biases: instance norm), MACs = output pixels x out x in x k x k:
    c7s1_in = 16 * 16 * 4 * 3 * 49, 4 * 3 * 49 + 4  # 3 -> 4, 7x7, at 16 x 16
    down1 = 8 * 8 * 8 * 4 * 9, 8 * 4 * 9 + 8  # 4 -> 8, 3x3 stride 2, at 8 x 8
    down2 = 4 * 4 * 16 * 8 * 9, 16 * 8 * 9 + 16  # 8 -> 16, at 4 x 4
    up1 = 4 * 4 * 16 * 8 * 9, 16 * 8 * 9 + 8  # transposed 16 -> 8: counted on its 4 x 4 input
    up2 = 8 * 8 * 8 * 4 * 9, 8 * 4 * 9 + 4  # transposed 8 -> 4 on 8 x 8
    c7s1_out = 16 * 16 * 3 * 4 * 49, 3 * 4 * 49 + 3  # 4 -> 3, 7x7, at 16 x 16
    ends = [c7s1_in, down1, down2, up1, up2, c7s1_out]
    # a standard block: two 3x3 16 -> 16 convolutions at 4 x 4
    standard = 2 * (4 * 4 * 16 * 16 * 9), 2 * (16 * 16 * 9 + 16)
    # a mobile block: two (3x3 depthwise 16 -> 16, then 1x1 16 -> 16)
    mobile = 2 * (4 * 4 * 16 * 9 + 4 * 4 * 16 * 16), 2 * (16 * 9 + 16 + 16 * 16 + 16)
    for blocks, block in (("standard", standard), ("mobile", mobile)):
        student = _student(blocks)
        macs = sum(m for m, _ in ends) + 6 * block[0]
        params = sum(p for _, p in ends) + 6 * block[1]
        assert (count_macs(student, 16), deployed_parameters(student)) == (macs, params), blocks
        assert sum(p.numel() for p in student.adapters.parameters()) > 0  # trained, but not deployed
    assert (sum(m for m, _ in ends) + 6 * mobile[0], sum(p for _, p in ends) + 6 * mobile[1]) == (451584, 9283)


def test_width_one_and_standard_blocks_leave_the_reference_generators_as_they_were():
    for a, b in ((ResnetGenerator(), ResnetGenerator(width=1.0, blocks="standard")),
                 (UnetGenerator(depth=5, ngf=8), UnetGenerator(depth=5, ngf=8, width=1.0))):
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert sum(p.numel() for p in ResnetGenerator().parameters()) == 11_378_179  # the reference's ResNet-9


# --- feature distillation ----------------------------------------------------------------------------
def test_the_feature_hooks_return_the_layers_asked_for():
    resnet = ResnetGenerator(ngf=8, n_blocks=9)
    assert resnet.feature_layers(4) == ["model.9", "model.12", "model.15", "model.18"]  # GAN Compression's
    assert resnet.feature_layers(2) == ["model.9", "model.18"]
    unet = UnetGenerator(depth=6, ngf=4, blocks="mobile", width=0.5)
    for net, n, side, channels in ((resnet, 3, 32, [32, 32, 32]), (unet, 4, 64, [2, 4, 8, 16])):
        names = net.feature_layers(n)
        with tap_features(net, names) as found:
            net(torch.zeros(1, 3, side, side))
        assert sorted(found) == sorted(names) and [found[k].shape[1] for k in names] == channels
        assert not any(m._forward_hooks for m in net.modules())  # gone after the block
    # a student's adapters map its channels onto the teacher's at the same layers
    student = _student("mobile")
    assert student.layers == student.teacher_layers == ["model.9", "model.11", "model.13", "model.15"]
    assert [(a.in_channels, a.out_channels) for a in student.adapters] == [(16, 32)] * 4
    # a mobile U-Net's layers sit elsewhere in its blocks than the teacher's: each side taps its own
    student = _student("mobile", "pix2pix")
    assert student.layers == ["up.1.4", "up.2.4", "up.3.4", "up.4.4"]
    assert student.teacher_layers == ["up.1.2", "up.2.2", "up.3.2", "up.4.2"]
    assert [(a.in_channels, a.out_channels) for a in student.adapters] == [(4, 8), (8, 16), (16, 32), (32, 64)]


# --- training ----------------------------------------------------------------------------------------
def test_a_tiny_pix2pix_distils_from_its_ema_teacher_with_the_teachers_discriminator(teachers, student):
    teacher = teachers["pix2pix"]
    cfg = build_config(teacher, width=0.5, steps=2)
    assert cfg.model.teacher == str((teacher / "step-00000002").resolve()) and cfg.model.teacher_step == 2
    assert cfg.train.data == open_checkpoint(teacher).config.train.data and cfg.train.ema == 0.5

    model = build_model(cfg)
    model.setup_training(open_checkpoint)
    weights = load_file(teacher / "step-00000002" / "weights.safetensors")
    for k, v in model.discriminators["D"].state_dict().items():  # started from the teacher's
        assert torch.equal(v, weights[f"discriminators.D.{k}"]), k
    for k, v in model.teachers["G"].state_dict().items():  # the EMA weights
        assert torch.equal(v, weights[f"ema.G.{k}"]), k
    assert not any(p.requires_grad for p in model.teachers["G"].parameters())
    assert all(k.startswith(("generators.G.", "discriminators.D.")) for k in model.state_dict())

    assert open_checkpoint(student).config.to_dict() == cfg.to_dict()  # the run below: this config, trained
    rows = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss_G_gan", "loss_G_recon", "loss_G_gt", "loss_G_feature", "loss_D"):
        assert all(key in r and r[key] == r[key] for r in rows), key  # logged, and not NaN
    saved = load_file(student / "step-00000002" / "weights.safetensors")
    assert any(k.startswith("generators.G.adapters.") for k in saved)
    assert not any("teacher" in k for k in saved)  # the teacher is rebuilt from its own checkpoint
    assert (student / "samples" / "step-00000002.png").is_file()


def test_one_direction_of_a_tiny_cyclegan_distils_through_the_cli(teachers, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = invoke("distill", teachers["cyclegan"], "--generator", "G_AB", "--width", "0.5", "--blocks",
                       "mobile", "--steps", "2", "--run-dir", "s", "--no-fid")
    assert code == 0, out
    assert "done: step 2 of 2" in out
    for line in ("MACs (32x32)", "parameters", "onnxruntime CPU img/s", "PSNR dB vs teacher's output"):
        assert line in out, line
    cfg = open_checkpoint("s").config
    assert cfg.train.model == "distill" and cfg.model.students == "G_AB" and cfg.model.blocks == "mobile"
    assert [t.direction for t in Distill.translations(cfg)] == ["AtoB"]
    saved = load_file("s/step-00000002/weights.safetensors")
    assert {k.split(".")[1] for k in saved if k.startswith(("generators.", "discriminators."))} == {"G_AB", "D_B"}
    scores = json.loads(Path("s/eval.json").read_text())
    row = scores["comparison"]["directions"]["AtoB"]
    assert row["student"]["macs"] * 4 < row["teacher"]["macs"] and row["student"]["ort_img_s"] > 0


def test_a_tiny_fastcut_distils_against_its_discriminator(tmp_path):
    # CUT's one generator reads its source through anti-aliased resampling; the student keeps it, and
    # learns from the teacher's output and activations and against its (output-only) discriminator
    train(train_config({**TINY, "model": "fastcut", "steps": 2, "generator": "resnet_6blocks"}), tmp_path / "cut",
          quiet=True)
    cfg = build_config(tmp_path / "cut", width=0.5, blocks="mobile", steps=2)
    assert [(t.direction, t.generator) for t in Distill.translations(cfg)] == [("AtoB", "G")]
    distill(cfg, tmp_path / "s", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss_G_gan", "loss_G_recon", "loss_G_feature", "loss_D"):
        assert all(key in r and r[key] == r[key] for r in rows), key
    assert "loss_G_gt" not in rows[-1]  # unpaired: no ground truth to match
    student = open_checkpoint(tmp_path / "s").generators(["G"])["G"].net  # a LoadedGenerator's Student
    assert sum(type(m).__name__ == "BlurDownsample" for m in student.net.modules()) == 2  # anti-aliased, as its teacher
    saved = load_file(tmp_path / "s" / "step-00000002" / "weights.safetensors")
    assert {k.split(".")[1] for k in saved if k.startswith(("generators.", "discriminators."))} == {"G", "D"}


def test_a_distillation_resumes_exactly(teachers, tmp_path):
    cfg = build_config(teachers["pix2pix"], width=0.5, blocks="mobile", steps=4, options={"checkpoint_every": 2})
    distill(cfg, tmp_path / "whole", quiet=True)
    distill(cfg, tmp_path / "stopped", quiet=True, stop_at=2)
    code, out = invoke("train", "--resume", tmp_path / "stopped")
    assert code == 0 and "done: step 4 of 4" in out, out
    a, b = (load_file(tmp_path / r / "step-00000004" / "weights.safetensors") for r in ("whole", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_student_exports_translates_evaluates_and_reports(student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = invoke("export", student, "--out", "student.onnx")
    assert code == 0 and "exported distill G (AtoB, step 2, fp32)" in out, out
    model = onnx.load("student.onnx")
    assert not any("adapters" in init.name for init in model.graph.initializer)
    Path("in").mkdir()
    Image.new("RGB", (40, 24), (200, 30, 90)).save("in/x.png")
    code, out = invoke("run", "in", "out", "--model", "student.onnx", "--seed", "0")
    assert code == 0 and Image.open("out/x.png").size == (40, 24), out
    code, out = invoke("eval", student, "--no-fid", "--n", "4")
    assert code == 0, out
    assert "against its teacher" in out and "MACs (32x32)" in out and "onnxruntime CPU img/s" in out
    comparison = json.loads((student / "eval.json").read_text())["comparison"]
    assert comparison["teacher_step"] == 2 and comparison["directions"]["AtoB"]["student"]["n"] == 4
    code, out = invoke("report", student, "--gallery", "2")
    assert code == 0 and (student / "report.html").stat().st_size > 1000, out


def test_the_speed_benchmark_compares_teacher_student_and_int8(student, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "bench" / "distill_speed.py"), str(student), "--rounds", "1",
                          "--seconds", "0", "--images", "2", "--calibration", "2", "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=300, cwd=root, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    models = json.loads((tmp_path / "s.json").read_text())["models"]
    assert list(models) == ["teacher fp32", "pix2pix-w0.5 fp32", "pix2pix-w0.5 int8"]
    assert models["teacher fp32"]["vs_teacher"] == 1.0 and models["pix2pix-w0.5 int8"]["psnr_vs_fp32"] > 20
    assert models["pix2pix-w0.5 fp32"]["macs"] < models["teacher fp32"]["macs"]


# --- errors ------------------------------------------------------------------------------------------
def test_clear_errors(teachers, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (24, 16, 16), dtype=np.uint8), y=np.arange(24) % 3)
    train(train_config({"model": "dcgan", "data": str(tmp_path / "d.npz"), "size": 16, "steps": 1, "batch_size": 8,
                        "ngf": 8, "ndf": 8, "workers": 0}), tmp_path / "dcgan", quiet=True)
    one_line_error(*invoke("distill", tmp_path / "dcgan"), "dcgan run", "no translator to distil")
    for width in ("0", "1.5", "-0.25"):
        one_line_error(*invoke("distill", teachers["pix2pix"], "--width", width), "--width must be above 0")
    one_line_error(*invoke("distill", teachers["cyclegan"], "--generator", "G"), "G_AB, G_BA", "--generator")
    one_line_error(*invoke("distill", tmp_path / "nothing"), "nothing")

    # a distillation whose teacher changed or went away says so when it resumes
    teacher = tmp_path / "teacher"
    shutil.copytree(teachers["pix2pix"], teacher)
    from translate.run import Run

    for case in ("changed", "gone"):
        run = Run(tmp_path / case)
        run.write_config(build_config(teacher, steps=2))
        if case == "changed":
            path = teacher / "step-00000002" / "config.json"
            path.write_text(path.read_text().replace('"lambda_l1": 100.0', '"lambda_l1": 10.0'))
            one_line_error(*invoke("train", "--resume", run.path), "is not the teacher", "config.json changed")
        else:
            shutil.rmtree(teacher)
            one_line_error(*invoke("train", "--resume", run.path), "teacher of this distillation", "is gone")
