"""Tests of ldminv_core.data.image_folders (and captions, safe_files): image folders and captions.

Oracle: PIL for the documented image conversion (resize keeping the aspect ratio, centre crop,
[-1, 1]).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from ldminv_core.data.image_folders import load_image_folder
from ldminv_core.errors import DataLoadError


def _expected_pixels(path, mode: str, size: int) -> np.ndarray:
    """Independent oracle of the documented conversion: mode, aspect-keeping resize of the
    shorter side to ``size`` (Lanczos), centre crop, then [0, 255] -> [-1, 1]."""
    img = Image.open(path)
    img.load()
    img = img.convert(mode)
    w, h = img.size
    if (w, h) != (size, size):
        if w / h > 1:
            nw, nh = w * size // h, size
        else:
            nw, nh = size, h * size // w
        img = img.resize((nw, nh), resample=Image.Resampling.LANCZOS)
        left, top = nw // 2 - size // 2, nh // 2 - size // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0 * 2 - 1
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_reads_sorted_converted_images(tmp_path, channels):
    paths = tiny_models.write_image_folder(tmp_path, 7, seed=5)
    (tmp_path / "notes.txt").write_text("hello")
    rows = [{"file_name": p.name, "text": f"caption {i}"} for i, p in enumerate(paths) if i != 2]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = load_image_folder(tmp_path, channels=channels, resolution=16)
    assert [p.name for p in s.paths] == sorted(p.name for p in paths)
    assert s.images.shape == (7, channels, 16, 16) and s.images.dtype == torch.float32
    assert s.images.min() >= -1 and s.images.max() <= 1
    mode = "L" if channels == 1 else "RGB"
    for i, p in enumerate(s.paths):
        np.testing.assert_allclose(s.images[i].numpy(), _expected_pixels(p, mode, 16), atol=1e-6)
    assert s.captions == [None if i == 2 else f"caption {i}" for i in range(7)]
    assert s.report.read == 7
    assert s.report.skipped == [("notes.txt", "not an image: .txt")]
    expected_converted = sum(1 for p in paths if Image.open(p).mode != mode or Image.open(p).size != (16, 16))
    assert s.report.converted == expected_converted


def test_image_folder_csv_captions_and_limit(tmp_path):
    paths = tiny_models.write_image_folder(tmp_path, 5, seed=6)
    lines = ["file_name,text"] + [f'{p.name},"text, number {i}"' for i, p in enumerate(paths)]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    s = load_image_folder(tmp_path, channels=1, resolution=8, limit=3)
    assert len(s) == 3 and s.images.shape == (3, 1, 8, 8)
    assert [p.name for p in s.paths] == [p.name for p in paths[:3]]
    assert s.captions == [f"text, number {i}" for i in range(3)]
    assert s.report.skipped == []


def test_corrupt_images_are_skipped_with_a_reason(tmp_path):
    tiny_models.write_image_folder(tmp_path, 3, seed=7)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = tmp_path / "img_000.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    s = load_image_folder(tmp_path, channels=3, resolution=16)
    assert s.report.read == 3
    skipped = dict(s.report.skipped)
    assert set(skipped) == {"broken.png", "truncated.png"}
    assert all(reason.startswith("unreadable image") for reason in skipped.values())


def test_folder_errors(tmp_path):
    with pytest.raises(DataLoadError, match="does not exist"):
        load_image_folder(tmp_path / "missing", channels=1, resolution=16)
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(DataLoadError, match="is not a folder"):
        load_image_folder(f, channels=1, resolution=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataLoadError, match=r"empty.* is empty"):
        load_image_folder(empty, channels=1, resolution=16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    (bad / "c.txt").write_text("text")
    with pytest.raises(DataLoadError) as err:
        load_image_folder(bad, channels=1, resolution=16)
    msg = str(err.value)
    assert str(bad) in msg and "no usable image" in msg
    assert "a.png: unreadable image" in msg and "c.txt: not an image: .txt" in msg


def test_malformed_metadata_is_named(tmp_path):
    tiny_models.write_image_folder(tmp_path, 2, seed=8)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "img_000.png", "text": "ok"}\n{oops\n')
    with pytest.raises(DataLoadError, match=r"metadata.jsonl, line 2"):
        load_image_folder(tmp_path, channels=1, resolution=16)


@pytest.mark.parametrize("mode", ["L", "RGB", "LA", "RGBA", "P"])
def test_same_size_images_are_read_bit_for_bit_as_diffusers_processor_reads_them(tmp_path, mode):
    """Images already at the resolution skip diffusers' VaeImageProcessor (its import costs seconds
    on a cold start); the tensors must be exactly the processor's, for every mode it converts."""
    from diffusers.image_processor import VaeImageProcessor

    rng = np.random.default_rng(0)
    for i in range(6):
        arr = rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)
        arr[0, 0] = [0, 0, 0, 255]
        arr[0, 1] = [255, 255, 255, 255]
        Image.fromarray(arr, mode="RGBA").convert(mode).save(tmp_path / f"{i:02d}.png")
    for channels in (1, 3):
        got = load_image_folder(tmp_path, channels=channels, resolution=16).images
        proc = VaeImageProcessor(do_resize=True, vae_scale_factor=1, do_normalize=True, do_convert_rgb=channels == 3,
                                 do_convert_grayscale=channels == 1)
        for k, path in enumerate(sorted(tmp_path.glob("*.png"))):
            img = Image.open(path).convert("L" if channels == 1 else "RGB")
            want = proc.preprocess(img, height=16, width=16, resize_mode="crop").to(torch.float32)
            assert torch.equal(got[k:k + 1], want), (mode, channels, path.name)
