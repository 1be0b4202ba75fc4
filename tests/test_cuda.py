"""CUDA paths: autocast, GradScaler, pinned memory. Skipped cleanly on machines without a GPU."""
import pytest
import torch

from translate.train import build_config, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("model", ["cyclegan", "pix2pix"])
@pytest.mark.parametrize("amp", ["auto", "fp16"])
def test_amp_training_steps_on_cuda(tmp_path, tiny, model, amp):
    cfg = build_config(dict(tiny, model=model, steps=3, device="cuda", amp=amp, workers=1))
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["step"] == 3
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1].lower()


def test_cuda_resume_matches(tmp_path, tiny):
    from safetensors.torch import load_file

    opts = dict(tiny, model="cyclegan", steps=4, device="cuda", amp="off", checkpoint_every=2)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    train(build_config(opts), tmp_path / "a", quiet=True)
    train(build_config(opts), tmp_path / "b", quiet=True, stop_at=2)
    train(build_config(opts), tmp_path / "b", resume=True, quiet=True)
    a = load_file(str(tmp_path / "a" / "step-00000004" / "weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "step-00000004" / "weights.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_compiled_channels_last_amp_training_on_cuda(tmp_path, tiny):
    cfg = build_config(dict(tiny, model="pix2pix", steps=3, device="cuda", amp="auto", compile=True, workers=1))
    assert train(cfg, tmp_path / "run", quiet=True)["step"] == 3
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in rows[-1].lower()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_with_synchronised_batch_norm_equal_one_gpu(tmp_path, tiny):
    """NCCL, one GPU per rank, SyncBatchNorm: with batch norm's statistics taken over the global
    batch, two GPUs of batch 2 train what one GPU of batch 4 does."""
    from safetensors.torch import load_file

    from test_distributed import options, torchrun

    opts = dict(tiny, model="pix2pix", steps=3, device="cuda", amp="off", dropout=0.0, norm="batch")
    torch.backends.cudnn.deterministic = True
    train(build_config(dict(opts, batch_size=4)), tmp_path / "one", quiet=True)
    out = torchrun(tmp_path / "two", *options(**dict(opts, batch_size=2)), gpus=True)
    assert "synchronised batch norm" in out.stdout + out.stderr
    a = load_file(str(tmp_path / "one" / "step-00000003" / "weights.safetensors"))
    b = load_file(str(tmp_path / "two" / "step-00000003" / "weights.safetensors"))
    for key in a:
        if key.startswith("generators."):
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=key)
