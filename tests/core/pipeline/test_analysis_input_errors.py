"""Bad inputs to the analysis: broken models, odd image folders, captions, options, the CLI.

Every case asserts the exact error class (or the skip reason in the load report) and that the
message names the culprit (file, key, option, value). Nothing may hang: the FIFO case runs
the load in a thread with a timeout. Models are the tiny diffusers pipelines of
tests/tiny_models.py, copied and then broken.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from ldminv_core.pipeline import inputs as inputs_mod
from ldminv_core.pipeline import output_folder as output_folder_mod
from ldminv_core import attacks as attacks_mod
from ldminv_core.models import loading as loading_mod
from ldminv_core.models.sources import check_model
from ldminv_core.__main__ import main
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.plan import check_config
from ldminv_core.pipeline.cost import estimate_cost
from ldminv_core.data.duplicates import find_duplicates
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.errors import (
    DataLoadError,
    LdminvError,
    ModelLoadError,
    NonFiniteError,
    RunError,
    UnknownNameError,
)
from ldminv_core.data.safe_files import MAX_IMAGE_PIXELS
from ldminv_core.data.image_folders import check_image_folder, load_image_folder
from ldminv_core.models.loading import load_model
from ldminv_core.runs import run_status

FAST = dict(attacks="sima", timesteps="0:20:10", batch_size=4, device="cpu")


def _cfg(model, members, heldout, out, **kw) -> AnalyzeConfig:
    base = dict(FAST)
    base.update(kw)
    return AnalyzeConfig(model=str(model), members=str(members), heldout=str(heldout), out=str(out), **base)


def _load(folder, **kw):
    return load_image_folder(folder, channels=1, resolution=16, **kw)


def _skips(image_set) -> dict[str, str]:
    return dict(image_set.report.skipped)


@pytest.fixture()
def model_copy(tmp_path, tiny_uncond_model) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_uncond_model, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    tiny_models.write_image_folder(folder, 3, seed=11, prefix="ok")
    return folder


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Loading a model fails the test: option errors must come first."""

    def boom(*a, **k):
        raise AssertionError("load_model was called before the options were validated")

    monkeypatch.setattr(inputs_mod, "load_model", boom)
    monkeypatch.setattr(loading_mod, "load_model", boom)


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    "sub, file, key, value",
    [
        ("vae", "config.json", "latent_channels", "four"),
        ("vae", "config.json", "scaling_factor", "big"),
        ("vae", "config.json", "sample_size", 16.5),
        ("unet", "config.json", "in_channels", "4"),
        ("unet", "config.json", "block_out_channels", "8,16"),
        ("unet", "config.json", "layers_per_block", True),
        ("scheduler", "scheduler_config.json", "num_train_timesteps", "1000"),
    ],
)
def test_config_values_of_the_wrong_type(model_copy, sub, file, key, value):
    _edit_json(model_copy / sub / file, **{key: value})
    with pytest.raises(ModelLoadError) as err:
        load_model(model_copy)
    msg = str(err.value)
    assert f"{sub}/{file}" in msg and repr(key) in msg and repr(value) in msg
    with pytest.raises(ModelLoadError, match=key):  # the cheap pre-check says the same
        check_model(model_copy)


def test_config_that_is_not_json(model_copy):
    (model_copy / "vae" / "config.json").write_text('{"latent_channels": 4,,')
    with pytest.raises(ModelLoadError, match=r"vae/config\.json") as err:
        load_model(model_copy)
    assert str(model_copy) in str(err.value)


def test_config_that_is_a_json_list(model_copy):
    (model_copy / "unet" / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match=r"unet/config\.json is not a JSON object"):
        load_model(model_copy)


def test_missing_weights_file(model_copy):
    (model_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"vae/ has no weights .*safetensors"):
        load_model(model_copy)


def test_only_pickled_weights_are_refused(model_copy):
    from safetensors.torch import load_file

    st = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(st), model_copy / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(model_copy)
    msg = str(err.value)
    assert "unet/" in msg and "diffusion_pytorch_model.bin" in msg and "pickle" in msg


def test_both_weight_formats_load_the_safetensors(model_copy):
    # a .bin next to the safetensors is never unpickled (garbage would fail to unpickle)
    (model_copy / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle")
    model = load_model(model_copy)
    assert model.latent_shape == tiny_models.TINY_LATENT_SHAPE


def test_corrupt_safetensors_file(model_copy):
    (model_copy / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError) as err:
        load_model(model_copy)
    assert "the VAE" in str(err.value) and "vae/" in str(err.value)


def test_unknown_block_type_from_diffusers_is_wrapped(model_copy):
    _edit_json(model_copy / "unet" / "config.json", down_block_types=["FooBlock2D", "AttnDownBlock2D"])
    with pytest.raises(ModelLoadError) as err:
        load_model(model_copy)
    assert "unet/" in str(err.value) and "FooBlock2D" in str(err.value)


@pytest.mark.parametrize("source", [None, 3, ""])
def test_model_that_is_not_a_path(source):
    with pytest.raises(ModelLoadError, match="model: expected"):
        load_model(source)


# ----------------------------------------------------------------------------- images


def test_fifo_is_skipped_without_blocking(images):
    fifo = images / "pipe.png"
    os.mkfifo(fifo)
    result: dict = {}

    def work():
        try:
            result["set"] = _load(images)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t0 = time.monotonic()
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("load_image_folder blocked on a FIFO")
    assert time.monotonic() - t0 < 20 and "error" not in result
    assert "named pipe (FIFO)" in _skips(result["set"])["pipe.png"]
    assert result["set"].report.read == 3
    check_image_folder(images)  # the pre-check does not block either


def test_symlink_to_a_fifo_is_not_opened(images):
    os.mkfifo(images.parent / "elsewhere.fifo")
    (images / "link.png").symlink_to(images.parent / "elsewhere.fifo")
    assert "not a regular file: a named pipe" in _skips(_load(images))["link.png"]


def test_socket_is_skipped():
    folder = Path(tempfile.mkdtemp(prefix="ldm"))  # a short path: AF_UNIX paths are limited to ~100 bytes
    try:
        tiny_models.write_image_folder(folder, 1, seed=1)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(folder / "s.png"))
        try:
            assert "a socket" in _skips(_load(folder))["s.png"]
        finally:
            sock.close()
    finally:
        shutil.rmtree(folder)


def test_truncated_png(images):
    data = (images / "ok_000.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) - 30])
    reason = _skips(_load(images))["cut.png"]
    assert reason.startswith("unreadable image")


def _png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is patched to declare width x height (CRC fixed)."""
    import io

    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_huge_png_header_is_refused_quickly(images):
    (images / "bomb.png").write_bytes(_png_with_size(100000, 100000))
    t0 = time.monotonic()
    s = _load(images)
    assert time.monotonic() - t0 < 10
    assert _skips(s)["bomb.png"].startswith("image too large")


def test_large_header_under_pil_limit_but_over_ours(images):
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 100  # more than ours, less than PIL's hard limit
    (images / "big.png").write_bytes(_png_with_size(side, side))
    reason = _skips(_load(images))["big.png"]
    assert reason.startswith("image too large") and f"{side} x {side}" in reason


def test_text_file_with_png_extension(images):
    (images / "notes.png").write_text("hello, I am text")
    assert _skips(_load(images))["notes.png"].startswith("unreadable image")


def test_empty_file(images):
    (images / "zero.png").write_bytes(b"")
    assert "empty file" in _skips(_load(images))["zero.png"]


def test_symlink_loop(images):
    (images / "a.png").symlink_to(images / "b.png")
    (images / "b.png").symlink_to(images / "a.png")
    skips = _skips(_load(images))
    assert "symbolic link loop" in skips["a.png"] and "symbolic link loop" in skips["b.png"]


def test_broken_symlink(images):
    (images / "gone.png").symlink_to(images / "nowhere.png")
    assert "broken symbolic link" in _skips(_load(images))["gone.png"]


def test_directory_named_like_an_image(images):
    (images / "x.png").mkdir()
    assert _skips(_load(images))["x.png"].startswith("sub-folder")


def test_symlink_to_a_file_outside_is_followed_and_recorded(images, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copy(images / "ok_000.png", outside)
    (images / "zz_link.png").symlink_to(outside)
    s = _load(images)
    assert s.report.read == 4 and "zz_link.png" not in _skips(s)
    assert dict(s.report.links)["zz_link.png"] == str(outside.resolve())
    assert s.report.as_dict()["links"] == [["zz_link.png", str(outside.resolve())]]


def test_unreadable_file(images, monkeypatch):
    target = images / "secret.png"
    shutil.copy(images / "ok_000.png", target)
    target.chmod(0)
    real_open = os.open

    def deny(path, flags, *a, **k):  # root ignores chmod 000: deny the read explicitly
        if Path(os.fsdecode(path)).name == "secret.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    try:
        assert "permission denied" in _skips(_load(images))["secret.png"]
    finally:
        target.chmod(0o644)


def test_file_name_that_is_not_utf8(images):
    name = os.fsdecode(b"caf\xe9.png")
    try:
        shutil.copy(images / "ok_000.png", images / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    s = _load(images)
    reason = _skips(s)["caf\\xe9.png"]
    assert "not valid UTF-8" in reason and s.report.read == 3
    json.dumps(s.report.as_dict())  # the report is storable as text


def test_folder_with_only_bad_entries_names_them(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    os.mkfifo(bad / "p.png")
    (bad / "t.png").write_text("x")
    with pytest.raises(DataLoadError) as err:
        _load(bad)
    msg = str(err.value)
    assert str(bad) in msg and "no usable image" in msg and "p.png: not a regular file" in msg


@pytest.mark.parametrize("options, culprit", [(dict(limit=2.7), "limit"), (dict(limit=True), "limit"),
                                              (dict(resolution=16.0), "resolution"), (dict(channels=2), "channels")])
def test_load_image_folder_refuses_non_integer_arguments(images, options, culprit):
    kw = dict(channels=1, resolution=16)
    kw.update(options)
    with pytest.raises(DataLoadError, match=culprit):
        load_image_folder(images, **kw)


# ----------------------------------------------------------------------------- captions


def test_caption_line_naming_a_missing_file_warns(images):
    rows = [{"file_name": "ok_000.png", "text": "a"}, {"file_name": "ghost.png", "text": "b"}]
    (images / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = _load(images)
    assert s.captions[0] == "a"
    (warning,) = s.report.warnings
    assert "metadata.jsonl" in warning and "line 2: 'ghost.png'" in warning
    assert s.report.as_dict()["warnings"] == [warning]


def test_caption_line_that_is_not_an_object(images):
    (images / "metadata.jsonl").write_text('{"file_name": "ok_000.png", "text": "a"}\n[1, 2]\n')
    with pytest.raises(DataLoadError, match=r"metadata\.jsonl, line 2: expected a JSON object, got list"):
        _load(images)


def test_caption_file_name_that_is_not_a_string(images):
    (images / "metadata.jsonl").write_text('{"file_name": "ok_000.png", "text": "a"}\n{"file_name": 7, "text": "b"}\n')
    with pytest.raises(DataLoadError, match=r"metadata\.jsonl, line 2: 'file_name' must be a non-empty string, got 7"):
        _load(images)


def test_caption_text_that_is_an_object(images):
    (images / "metadata.jsonl").write_text('{"file_name": "ok_000.png", "text": {"en": "a"}}\n')
    with pytest.raises(DataLoadError, match=r"metadata\.jsonl, line 1: 'text' must be a string, got dict"):
        _load(images)


def test_caption_csv_with_a_ragged_row(images):
    (images / "metadata.csv").write_text("file_name,text\nok_000.png,a\nok_001.png,b,extra,more\n")
    with pytest.raises(DataLoadError) as err:
        _load(images)
    assert "metadata.csv" in str(err.value) and "line 3" in str(err.value)


def test_caption_file_that_is_not_utf8(images):
    (images / "metadata.jsonl").write_bytes(b'{"file_name": "ok_000.png", "text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataLoadError, match=r"metadata\.jsonl, line 2: not valid UTF-8"):
        _load(images)


def test_caption_file_that_is_a_fifo_is_ignored_with_a_warning(images):
    os.mkfifo(images / "metadata.jsonl")
    s = _load(images)
    assert s.report.read == 3 and any("metadata.jsonl: not a regular file" in w for w in s.report.warnings)


# ----------------------------------------------------------------------------- options (API)


@pytest.mark.parametrize(
    "options, error, culprit",
    [
        (dict(timesteps=[10.5]), LdminvError, "10.5"),
        (dict(timesteps=[0, True]), LdminvError, "True"),
        (dict(timesteps="0:30:x"), LdminvError, "0:30:x"),
        (dict(limit=2.7), LdminvError, "limit"),
        (dict(limit=True), LdminvError, "limit"),
        (dict(topk=0), LdminvError, "topk"),
        (dict(seed=-1), LdminvError, "seed"),
        (dict(batch_size="8"), LdminvError, "batch_size"),
        (dict(attacks=3), UnknownNameError, "attacks"),
        (dict(attacks="sima,bogus"), UnknownNameError, "bogus"),
        (dict(influence=None), UnknownNameError, "influence"),
        (dict(residual_dtype="float64"), UnknownNameError, "float64"),
        (dict(force="yes"), LdminvError, "force"),
        (dict(allow_duplicates=1), LdminvError, "allow_duplicates"),
        (dict(device="gpu"), ModelLoadError, "gpu"),
        (dict(model=None), LdminvError, "model"),
        (dict(members=3), LdminvError, "members"),
        (dict(heldout=None), LdminvError, "heldout"),
    ],
)
def test_bad_option_is_refused_before_loading(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading,
                                              options, error, culprit):
    base = dict(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]), heldout=str(tiny_image_dirs[1]),
                out=str(tmp_path / "run"), **FAST)
    base.update(options)
    config = AnalyzeConfig(**base)
    for call in (run_analysis, estimate_cost, check_config):
        with pytest.raises(error) as err:
            call(config)
        assert type(err.value) is error and culprit in str(err.value)
    assert not (tmp_path / "run").exists()


def test_same_folder_for_both_splits(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading):
    cfg = _cfg(tiny_uncond_model, tiny_image_dirs[0], tiny_image_dirs[0], tmp_path / "run")
    with pytest.raises(DataLoadError, match="same folder") as err:
        run_analysis(cfg)
    assert str(tiny_image_dirs[0].resolve()) in str(err.value)


@pytest.mark.parametrize("which", ["members", "heldout"])
def test_missing_and_empty_image_folders(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading, which):
    (tmp_path / "empty").mkdir()
    for folder, text in ((tmp_path / "absent", "does not exist"), (tmp_path / "empty", "is empty")):
        dirs = {"members": tiny_image_dirs[0], "heldout": tiny_image_dirs[1], which: folder}
        with pytest.raises(DataLoadError) as err:
            run_analysis(_cfg(tiny_uncond_model, dirs["members"], dirs["heldout"], tmp_path / "run"))
        assert which in str(err.value) and str(folder) in str(err.value) and text in str(err.value)


def test_image_folder_that_is_a_file(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DataLoadError, match="is not a folder"):
        run_analysis(_cfg(tiny_uncond_model, f, tiny_image_dirs[1], tmp_path / "run"))


def test_out_under_a_regular_file(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(RunError) as err:
        run_analysis(_cfg(tiny_uncond_model, *tiny_image_dirs, tmp_path / "plain" / "run"))
    msg = str(err.value)
    assert str(tmp_path / "plain") in msg and "is a file" in msg and "samples" not in msg


def test_out_in_an_unwritable_folder(tmp_path, tiny_uncond_model, tiny_image_dirs, no_model_loading, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(output_folder_mod.os, "access",
                        lambda p, mode, **k: False if Path(p) == locked else real_access(p, mode, **k))
    with pytest.raises(RunError) as err:
        run_analysis(_cfg(tiny_uncond_model, *tiny_image_dirs, locked / "run"))
    assert str(locked) in str(err.value) and "not writable" in str(err.value)


def test_broken_model_config_is_refused_before_loading(tmp_path, model_copy, tiny_image_dirs, no_model_loading):
    _edit_json(model_copy / "vae" / "config.json", latent_channels="four")
    with pytest.raises(ModelLoadError, match=r"vae/config\.json: 'latent_channels'"):
        run_analysis(_cfg(model_copy, *tiny_image_dirs, tmp_path / "run"))


# ----------------------------------------------------------------------------- CLI


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _analyze_args(model, members, heldout, out, *extra):
    return ["analyze", "--model", str(model), "--members", str(members), "--heldout", str(heldout),
            "--out", str(out), "--attacks", "sima", "--timesteps", "0:20:10", "--batch-size", "4", "--device", "cpu", *extra]


def test_cli_options_are_validated_before_the_model_loads(tmp_path, tiny_uncond_model, tiny_image_dirs, capsys,
                                                          no_model_loading):
    m, h = tiny_image_dirs
    cases = [
        (_analyze_args(tiny_uncond_model, m, m, tmp_path / "r"), str(m)),  # same folder
        (_analyze_args(tiny_uncond_model, tmp_path / "nope", h, tmp_path / "r"), "nope"),
        (_analyze_args(tiny_uncond_model, m, h, tmp_path / "r", "--timesteps", "5:1"), "5:1"),
        (_analyze_args(tiny_uncond_model, m, h, tmp_path / "r", "--limit", "0"), "limit"),
        (_analyze_args(tiny_uncond_model, m, h, tmp_path / "r", "--threads", "0"), "--threads"),
        (_analyze_args(tiny_uncond_model, m, h, tmp_path / "r", "--topk", "abc"), "--topk"),
        (_analyze_args(tmp_path / "no-model", m, h, tmp_path / "r"), "no-model"),
    ]
    (tmp_path / "f").write_text("x")
    cases.append((_analyze_args(tiny_uncond_model, m, h, tmp_path / "f" / "r"), str(tmp_path / "f")))
    for args, culprit in cases:
        code, out, err = _cli(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and culprit in err, (args, err)
        assert "Traceback" not in err and "AssertionError" not in err


@pytest.mark.parametrize(
    "extra, culprit", [(["--seed", "-3"], "--seed"), (["--n-boot", "0"], "--n-boot"), (["--drop", "150"], "--drop")]
)
def test_cli_report_bad_numbers(tmp_path, capsys, extra, culprit):
    code, _, err = _cli(["report", str(tmp_path / "any"), *extra], capsys)
    assert code == 2 and err.startswith("error: ") and culprit in err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_uncond_model, tiny_image_dirs) -> Path:
    out = tmp_path_factory.mktemp("bad_inputs") / "small"
    return run_analysis(_cfg(tiny_uncond_model, *tiny_image_dirs, out, limit=2))


def test_cli_complete_run_with_other_settings_exits_2(small_run, tiny_uncond_model, tiny_image_dirs, capsys):
    before = (small_run / "run.json").read_text()
    args = _analyze_args(tiny_uncond_model, *tiny_image_dirs, small_run, "--limit", "2", "--seed", "5")
    code, out, err = _cli(args, capsys)
    assert code == 2
    assert "seed: 0 there, 5 now" in err and "--force" in err and "another --out" in err
    assert (small_run / "run.json").read_text() == before
    # the API refuses the same way
    with pytest.raises(RunError, match="seed: 0 there, 5 now"):
        run_analysis(_cfg(tiny_uncond_model, *tiny_image_dirs, small_run, limit=2, seed=5))
    # same settings: a note, exit 0
    code, out, err = _cli(_analyze_args(tiny_uncond_model, *tiny_image_dirs, small_run, "--limit", "2"), capsys)
    assert code == 0 and "already complete" in out and "nothing to do" in out, err


# ----------------------------------------------------------------------------- duplicates


@pytest.fixture()
def dup_dirs(tmp_path) -> tuple[Path, Path]:
    members, heldout = tmp_path / "m", tmp_path / "h"
    tiny_models.write_image_folder(members, 3, seed=21, prefix="m", formats=("png",), modes=("L",))
    tiny_models.write_image_folder(heldout, 3, seed=22, prefix="h", formats=("png",), modes=("L",))
    shutil.copy(members / "m_000.png", heldout / "h_copy.png")  # a byte copy across the splits
    Image.open(members / "m_001.png").save(members / "m_reencoded.bmp")  # a re-encoded copy within members
    return members, heldout


def test_duplicates_are_refused_naming_folders_count_and_pairs(tmp_path, tiny_uncond_model, dup_dirs):
    with pytest.raises(DataLoadError) as err:
        run_analysis(_cfg(tiny_uncond_model, *dup_dirs, tmp_path / "run"))
    msg = str(err.value)
    assert str(dup_dirs[0]) in msg and str(dup_dirs[1]) in msg and "2 duplicate(s)" in msg
    assert "member m_000.png = held-out h_copy.png" in msg and "member m_001.png = member m_reencoded.bmp" in msg
    assert "--allow-duplicates" in msg
    assert not (tmp_path / "run").exists()
    members, heldout = (_load(d) for d in dup_dirs)
    dup = find_duplicates(members, heldout)
    assert (dup["across"], dup["within_members"], dup["within_heldout"]) == (1, 1, 0)


def test_duplicates_allowed_are_recorded_as_a_warning(tmp_path, tiny_uncond_model, dup_dirs, capsys):
    rows = [{"file_name": "ghost.png", "text": "x"}]
    (dup_dirs[1] / "metadata.jsonl").write_text(json.dumps(rows[0]) + "\n")
    code, out, err = _cli(_analyze_args(tiny_uncond_model, *dup_dirs, tmp_path / "run", "--allow-duplicates",
                                        "--threads", "1"), capsys)
    assert code == 0, err
    assert "warning: duplicate images" in err and "ghost.png" in err
    data = json.loads((tmp_path / "run" / "run.json").read_text())
    assert isinstance(data["warnings"], list) and all(isinstance(w, str) for w in data["warnings"])
    assert any("2 duplicate(s)" in w and "allow_duplicates" in w for w in data["warnings"])
    assert any(w.startswith("heldout: ") and "ghost.png" in w for w in data["warnings"])
    assert data["allow_duplicates"] is True


# ----------------------------------------------------------------------------- non-finite values


def test_nan_residuals_name_stage_file_and_samples_and_stay_resumable(tmp_path, tiny_uncond_model, tiny_image_dirs,
                                                                      monkeypatch):
    real = attacks_mod.attack_terms

    def poisoned(*a, **k):
        res = real(*a, **k).clone()
        res[1] = float("nan")
        return res

    monkeypatch.setattr(attacks_mod, "attack_terms", poisoned)
    cfg = _cfg(tiny_uncond_model, *tiny_image_dirs, tmp_path / "run", limit=3)
    with pytest.raises(NonFiniteError) as err:
        run_analysis(cfg)
    msg = str(err.value)
    assert "stage 'sima'" in msg and "residuals/sima.npy" in msg and "sample id(s) 1 (" in msg
    assert run_status(tmp_path / "run") == "unfinished"
    monkeypatch.setattr(attacks_mod, "attack_terms", real)
    assert run_status(run_analysis(cfg)) == "complete"  # resumed


def test_float16_overflow_is_detected(tmp_path, tiny_uncond_model, tiny_image_dirs, monkeypatch):
    real = attacks_mod.attack_terms
    monkeypatch.setattr(attacks_mod, "attack_terms", lambda *a, **k: real(*a, **k) * 1e9)
    cfg = _cfg(tiny_uncond_model, *tiny_image_dirs, tmp_path / "run", limit=2, residual_dtype="float16")
    with pytest.raises(NonFiniteError, match="float16 overflows"):
        run_analysis(cfg)
