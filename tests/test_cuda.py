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
