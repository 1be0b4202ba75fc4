import logging

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_image
from translate.data import TranslationDataset, detect_layout, make_loader
from translate.data.synthetic import render_pair
from translate.errors import DataError
from translate.images import load_rgb, to_float, to_uint8


def dataset(root, **kw):
    opts = dict(size=32, load_size=36, unpaired=False)
    opts.update(kw)
    return TranslationDataset(detect_layout(root), **opts)


def test_layouts(unpaired_dir, aligned_dir, paired_dir):
    assert detect_layout(unpaired_dir).kind == "unpaired"
    assert detect_layout(aligned_dir).kind == "aligned"
    assert detect_layout(paired_dir).kind == "paired"
    assert detect_layout(None).kind == "synthetic"
    assert detect_layout(aligned_dir / "train").kind == "aligned"  # a bare folder of AB images


def test_unpaired_epoch_is_max_and_b_is_random(unpaired_dir):
    ds = dataset(unpaired_dir, unpaired=True)
    assert len(ds) == 5
    item = ds[(0, 0)]
    assert item["A"].shape == (3, 32, 32) and item["B"].shape == (3, 32, 32)
    assert -1.0 <= item["A"].min() and item["A"].max() <= 1.0
    bs = {tuple(ds[(0, s)]["B"][:, 0, 0].tolist()) for s in range(12)}
    assert len(bs) > 1  # B is drawn at random per sample


def test_same_crop_and_flip_for_both_halves(tmp_path):
    # identical halves must stay identical through the random crop and flip
    arr = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([arr, arr], axis=1)).save(tmp_path / "0.png")
    ds = TranslationDataset(detect_layout(tmp_path), size=24, load_size=0)
    for s in range(8):
        item = ds[(0, s)]
        assert torch.equal(item["A"], item["B"])


def test_samples_are_deterministic_by_seed(aligned_dir):
    ds = dataset(aligned_dir)
    assert torch.equal(ds[(1, 7)]["A"], ds[(1, 7)]["A"])
    assert not torch.equal(ds[(1, 7)]["A"], ds[(1, 8)]["A"])


def test_missing_folders_and_empty(tmp_path):
    (tmp_path / "trainA").mkdir()
    with pytest.raises(DataError, match="trainB is missing"):
        detect_layout(tmp_path)
    (tmp_path / "trainB").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        dataset(tmp_path, unpaired=True)
    with pytest.raises(DataError, match="does not exist"):
        detect_layout(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="none of the known layouts"):
        detect_layout(empty)


def test_corrupt_images_skipped_with_warning(unpaired_dir, caplog):
    bad = unpaired_dir / "trainA" / "broken.png"
    bad.write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING, logger="translate"):
        ds = dataset(unpaired_dir, unpaired=True, max_bad_fraction=0.5)
    assert bad not in ds.files_A and len(ds.files_A) == 5
    assert "broken.png" in caplog.text


def test_too_many_bad_images_is_an_error(unpaired_dir):
    for i in range(3):
        (unpaired_dir / "trainB" / f"bad{i}.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="3 of 6 images .* unreadable"):
        dataset(unpaired_dir, unpaired=True)


def test_truncated_image_replaced_at_load_time(tmp_path, caplog):
    for i in range(3):
        write_image(tmp_path / "train" / f"{i}.jpg", size=(80, 40), seed=i)
    path = tmp_path / "train" / "0.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, data cut
    ds = dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="translate"):
        item = ds[(0, 0)]
    assert item["A"].shape == (3, 32, 32)
    assert "0.jpg" in caplog.text


def test_pair_names_must_match(paired_dir):
    (paired_dir / "B" / "0.jpg").rename(paired_dir / "B" / "zzz.jpg")
    with pytest.raises(DataError, match=r"no match in .*B.*pairs are matched by file name"):
        dataset(paired_dir)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_modes_are_converted_to_rgb(tmp_path, mode, caplog):
    path = write_image(tmp_path / "A" / "x.png", mode=mode)
    write_image(tmp_path / "B" / "x.png")
    assert load_rgb(path).shape == (40, 40, 3)
    with caplog.at_level(logging.INFO, logger="translate"):
        ds = dataset(tmp_path)
    assert ds[(0, 0)]["A"].shape == (3, 32, 32)
    assert "converted to RGB" in caplog.text


def test_sixteen_bit_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 65535, np.uint16)
    Image.fromarray(arr).save(tmp_path / "w.png")
    assert load_rgb(tmp_path / "w.png").min() == 255


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (30, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").shape == (30, 20, 3)


def test_small_images_upscaled_with_note(tmp_path, caplog):
    for i in range(2):
        write_image(tmp_path / "trainA" / f"{i}.png", size=(20, 16), seed=i)
        write_image(tmp_path / "trainB" / f"{i}.png", size=(20, 16), seed=i)
    with caplog.at_level(logging.INFO, logger="translate"):
        ds = dataset(tmp_path, unpaired=True, load_size=0)
    assert "smaller than 32 px and will be upscaled" in caplog.text
    assert ds[(0, 0)]["A"].shape == (3, 32, 32)


def test_synthetic_pairs_deterministic_and_aligned():
    a1, b1 = render_pair(48, seed=3, index=5)
    a2, b2 = render_pair(48, seed=3, index=5)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(render_pair(48, seed=4, index=5)[0], a1)
    assert a1.shape == b1.shape == (48, 48, 3) and a1.dtype == np.uint8
    # aligned: the background colour of the label map marks where the rendering shows the backdrop
    bg = (a1 == [20, 30, 120]).all(-1)
    assert 0.05 < bg.mean() < 0.98


def test_synthetic_sample_batch_is_held_out():
    ds = TranslationDataset(detect_layout(None), size=32, load_size=None, synthetic_count=4)
    batch = ds.sample_batch(3)
    assert batch["A"].shape == (3, 3, 32, 32)


def test_conversions_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = to_float(img)
    assert x.shape == (3, 5, 7) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), img)
    assert np.array_equal(to_uint8(torch.from_numpy(x)), img)


def test_loader_resumes_the_stream(aligned_dir):
    ds = dataset(aligned_dir)
    full = make_loader(ds, batch_size=2, seed=1, start=0, workers=0, pin_memory=False)
    it = iter(full)
    batches = [next(it)["A"] for _ in range(5)]
    resumed = iter(make_loader(ds, batch_size=2, seed=1, start=6, workers=0, pin_memory=False))
    assert torch.equal(next(resumed)["A"], batches[3])


def test_large_jpegs_decode_at_a_reduced_scale_that_still_covers_the_load_size(tmp_path):
    """A JPEG far larger than the load size is decoded at 1/2..1/8 scale (faster), never below
    the size the pipeline resizes to, and looks like the full decode resized."""
    from PIL import Image

    from translate.data.synthetic import render_pair
    from translate.images import load_rgb, resize

    a, b = render_pair(600, seed=0, index=3)
    path = tmp_path / "big" / "train" / "0.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.concatenate([a, b], axis=1)).save(path, quality=95)
    small = load_rgb(path, at_least=(144, 72))
    assert small.shape == (75, 150, 3)  # 1/8 scale: the largest that keeps 144 x 72
    full = load_rgb(path)
    assert full.shape == (600, 1200, 3)
    diff = np.abs(resize(small, (72, 144)).astype(float) - resize(full, (72, 144)).astype(float)).mean()
    assert diff < 3.0
    ds = TranslationDataset(detect_layout(tmp_path / "big"), size=64, load_size=None)
    sample = ds[(0, 0)]
    assert sample["A"].shape == (3, 64, 64) and sample["B"].shape == (3, 64, 64)
