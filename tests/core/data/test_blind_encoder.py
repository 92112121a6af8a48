"""The optional ``encoder`` feature group of the blind baseline (``--blind-encoder``) and the
cross-fitting of every group.

Tiny random image models are built from configs into tmp folders (nothing downloads): a CLIP
vision tower with its image processor, a full CLIP checkpoint, a DINOv2 without a processor (the
documented fallback preprocessing). Oracles: a direct forward of the same model, loaded by
transformers itself, on images preprocessed independently of ldminv; ``CLIPModel.get_image_features``;
the analysis pipeline on the tiny diffusion models of tests/conftest.py. Cross-fitting: shuffling
one fold's labels leaves that fold's out-of-fold scores unchanged, and a feature that identifies
each sample (learnable only by a classifier that saw it) carries no signal out of fold.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from transformers import (BertConfig, BertModel, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig,
                          CLIPVisionModel, Dinov2Config, Dinov2Model)

from ldminv_core.__main__ import main
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.plan import check_config
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.data.blind_features import (BLIND_FILE, BlindFeatures, blind_features, read_blind_features,
                                             run_blind_features, store_blind_features)
from ldminv_core.models.blind_encoder import load_image_encoder
from ldminv_core.errors import LdminvError, RunError
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.blind import cross_fitted_blind_scores
from ldminv_core.runs import Run
from synthetic_runs import write_run

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)


def _save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A random CLIPVisionModel (hidden 32, 2 layers, 32 x 32 images, patch 8) with its
    CLIPImageProcessor (resize the shortest edge to 32, centre crop 32 x 32)."""
    torch.manual_seed(0)
    folder = _save(CLIPVisionModel(CLIPVisionConfig(**VISION)), tmp_path_factory.mktemp("clip_vision"))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    """A random Dinov2Model (hidden 32, 2 layers, 32 x 32 images, patch 8), no image processor."""
    torch.manual_seed(1)
    return _save(Dinov2Model(Dinov2Config(**VISION)), tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Seven files of several sizes, modes (L, RGB, RGBA) and formats (PNG, JPEG)."""
    folder = tmp_path_factory.mktemp("encoder_images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (mode, size, fmt) in enumerate([("RGB", (40, 30), "PNG"), ("L", (32, 32), "PNG"), ("RGBA", (25, 50), "PNG"),
                                           ("RGB", (64, 48), "JPEG"), ("RGB", (17, 33), "PNG"),
                                           ("L", (50, 20), "JPEG"), ("RGB", (32, 32), "PNG")]):
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
        path = folder / f"img_{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path, format=fmt)
        paths.append(path)
    return paths


def _rgb(paths: list[Path]) -> list[Image.Image]:
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(im.convert("RGB"))
    return out


def test_clip_vision_embeddings_equal_a_direct_forward(clip_dir, images):
    feats = blind_features(images, encoder=clip_dir, batch_size=3)  # three batches: 3 + 3 + 1
    # the oracle: transformers' own model and processor, one batch
    model = CLIPVisionModel.from_pretrained(clip_dir, use_safetensors=True).eval()
    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=_rgb(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = model(pixel_values=torch.as_tensor(pixels)).pooler_output.numpy()
    got = feats.groups["encoder"]
    assert got.shape == (7, 32) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - got.mean(axis=0)).max() > 1e-3  # the images differ, so do their embeddings
    assert feats.names["encoder"] == tuple(f"emb_{i}" for i in range(32))
    assert feats.encoder["class"] == "CLIPVisionModel" and feats.encoder["output"] == "pooler_output"
    assert feats.encoder["dim"] == 32 and feats.encoder["path"] == str(clip_dir.resolve())
    assert feats.encoder["device"] == "cpu" and "preprocessor_config.json" in feats.encoder["preprocessing"]
    # the other groups are those of the files alone, unchanged by the encoder
    plain = blind_features(images)
    assert set(plain.groups) == {"meta", "pixels"} and plain.encoder is None
    for g in ("meta", "pixels"):
        np.testing.assert_array_equal(feats.groups[g], plain.groups[g])


def test_stored_encoder_group_and_record_round_trip(clip_dir, images, tmp_path):
    feats = blind_features(images, encoder=clip_dir)
    path = store_blind_features(tmp_path / BLIND_FILE, feats)
    back = read_blind_features(path, n=7)
    np.testing.assert_array_equal(back.groups["encoder"], feats.groups["encoder"])
    assert back.names["encoder"] == feats.names["encoder"] and back.encoder == feats.encoder
    # an encoder group without the record of its model is refused (named)
    store_blind_features(path, BlindFeatures(groups=feats.groups, names=feats.names))
    with pytest.raises(RunError, match="encoder"):
        read_blind_features(path, n=7)


def test_dinov2_without_processor_uses_the_documented_resize_and_normalise(dino_dir, images):
    feats = blind_features(images, encoder=dino_dir, batch_size=4)
    # the oracle: RGB, bicubic 32 x 32, [0, 1], ImageNet mean / std; the layernormed CLS token
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = np.stack([(np.asarray(im.resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float64) / 255 - mean) / std
                  for im in _rgb(images)]).transpose(0, 3, 1, 2)
    model = Dinov2Model.from_pretrained(dino_dir, use_safetensors=True).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(feats.groups["encoder"], out.pooler_output.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pooler_output.numpy(), out.last_hidden_state[:, 0].numpy(), atol=1e-6)
    assert feats.encoder["class"] == "Dinov2Model" and "ImageNet mean / std" in feats.encoder["preprocessing"]


def test_a_full_clip_checkpoint_gives_its_projected_image_features(tmp_path, images):
    torch.manual_seed(2)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
                bos_token_id=0, eos_token_id=1)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)).eval()
    folder = _save(full, tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    feats = blind_features(images, encoder=folder)
    pixels = CLIPImageProcessor.from_pretrained(folder)(images=_rgb(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = full.get_image_features(pixel_values=torch.as_tensor(pixels))
    want = want if torch.is_tensor(want) else want.pooler_output
    assert feats.groups["encoder"].shape == (7, 16)
    np.testing.assert_allclose(feats.groups["encoder"], want.numpy(), rtol=1e-5, atol=1e-5)
    assert feats.encoder["class"] == "CLIPVisionModelWithProjection" and feats.encoder["output"] == "image_embeds"


def _fake_hub_cache(root: Path, repo: str, source: Path) -> Path:
    """A Hugging Face cache holding ``source``'s files as the snapshot of ``repo`` at main."""
    commit = "0" * 40
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in source.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def test_a_hub_id_is_read_from_the_local_cache_only(clip_dir, images, tmp_path, monkeypatch):
    import huggingface_hub.constants

    snap = _fake_hub_cache(tmp_path / "hub", "tiny-org/clip-vision", clip_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no folder named like the id here
    feats = blind_features(images, encoder="tiny-org/clip-vision")
    assert feats.encoder["name"] == "tiny-org/clip-vision" and Path(feats.encoder["path"]) == snap.resolve()
    np.testing.assert_array_equal(feats.groups["encoder"], blind_features(images, encoder=clip_dir).groups["encoder"])
    with pytest.raises(LdminvError, match=r"--blind-encoder.*'tiny-org/absent' is not in the local Hugging Face cache"):
        load_image_encoder("tiny-org/absent")


def test_errors_name_the_option(clip_dir, tmp_path):
    with pytest.raises(LdminvError, match=r"blind_encoder \(--blind-encoder\): folder .*nowhere does not exist"):
        load_image_encoder(tmp_path / "nowhere")
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"x")
    with pytest.raises(LdminvError, match="--blind-encoder.*is a file"):
        load_image_encoder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LdminvError, match="--blind-encoder.*no config.json"):
        load_image_encoder(empty)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((clip_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(LdminvError, match="--blind-encoder.*no .safetensors weights.*pytorch_model.bin"):
        load_image_encoder(pickled)
    text_only = _save(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                           intermediate_size=37, vocab_size=50)), tmp_path / "bert")
    with pytest.raises(LdminvError, match="--blind-encoder.*BertModel.*did not embed a test image"):
        load_image_encoder(text_only)


def _analyze_config(model: Path, dirs, out: Path, **kw) -> AnalyzeConfig:
    return AnalyzeConfig(model=str(model), members=str(dirs[0]), heldout=str(dirs[1]), out=str(out),
                         attacks="sima", timesteps="0:20:10", batch_size=8, device="cpu", **kw)


@pytest.mark.slow
def test_analyze_stores_the_encoder_group_and_records_the_model(tiny_uncond_model, tiny_image_dirs, clip_dir,
                                                                dino_dir, tmp_path):
    out = run_analysis(_analyze_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "run",
                                       blind_encoder=str(clip_dir)))
    data = json.loads((out / "run.json").read_text())
    assert data["config"]["blind_encoder"] == str(clip_dir.resolve())
    record = data["blind"]["encoder"]
    assert record["class"] == "CLIPVisionModel" and record["dim"] == 32 and record["path"] == str(clip_dir.resolve())
    assert "encoder" in data["blind"]["groups"] and data["blind"]["features"]["encoder"] == 32
    run = Run.open(out)
    paths = list(run.samples["path"])
    stored = run_blind_features(run)
    np.testing.assert_allclose(stored.groups["encoder"], blind_features(paths, encoder=clip_dir).groups["encoder"],
                               atol=1e-6)
    assert stored.encoder == record
    blind = Evaluation(run, "sima", "honest", n_boot=50).blind()
    assert blind.available, blind.reason
    enc = blind.group("encoder")
    assert enc is not None and enc.n_features == 32
    assert enc.auroc == pytest.approx(roc_auc_score(run.samples["split"] == "member", blind.scores["encoder"]))
    # the report says which model made the group
    from ldminv_core.report import build_report, format_report
    report = build_report(run, protocol="honest", n_boot=50)
    assert report["blind"]["encoder"] == record and "CLIPVisionModel" in report["blind"]["encoder_text"]
    assert "encoder group: embeddings of" in format_report(report)
    # a run made with one encoder is not taken for a run with another, or with none
    for other in (str(dino_dir), None):
        with pytest.raises(RunError, match="blind_encoder"):
            check_config(_analyze_config(tiny_uncond_model, tiny_image_dirs, out, blind_encoder=other))
    assert check_config(_analyze_config(tiny_uncond_model, tiny_image_dirs, out, blind_encoder=str(clip_dir)))


@pytest.mark.slow
def test_a_run_without_encoder_has_no_encoder_group(tiny_uncond_model, tiny_image_dirs, tmp_path):
    out = run_analysis(_analyze_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "plain"))
    data = json.loads((out / "run.json").read_text())
    assert "blind_encoder" not in data["config"] and data["blind"]["encoder"] is None
    assert "encoder" not in run_blind_features(Run.open(out)).groups


def test_a_missing_encoder_is_refused_before_anything_runs(tiny_uncond_model, tiny_image_dirs, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(LdminvError, match="blind_encoder.*--blind-encoder.*does not exist"):
        check_config(_analyze_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "r1", blind_encoder=str(missing)))
    with pytest.raises(LdminvError, match=r"blind_encoder \(--blind-encoder\): expected a folder path or hub id"):
        check_config(_analyze_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "r1", blind_encoder=7))
    code = main(["analyze", "--model", str(tiny_uncond_model), "--members", str(tiny_image_dirs[0]),
                 "--heldout", str(tiny_image_dirs[1]), "--out", str(tmp_path / "r2"), "--attacks", "sima",
                 "--blind-encoder", str(missing)])
    err = capsys.readouterr().err
    assert code != 0 and "--blind-encoder" in err and str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "r2").exists()


# --------------------------------------------------------------------------- cross-fitting


def _folds(labels: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    out = np.zeros(labels.size, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)):
        out[test] = f
    return out


def test_shuffling_one_folds_labels_leaves_its_scores_unchanged(clip_dir, tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for i in range(40):
        pixels = np.clip(rng.normal(110 + 25 * (i % 2), 40, size=(24, 28, 3)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"x{i}.png")
        Image.fromarray(pixels, mode="RGB").save(paths[-1])
    labels = np.arange(40) % 2
    feats = blind_features(paths, encoder=clip_dir, captions=[f"w{i % 7} v{i % 3}" for i in range(40)])
    folds = _folds(labels)
    base = cross_fitted_blind_scores(feats, labels, folds)
    assert set(base.scores) == {"meta", "pixels", "caption", "encoder", "all"}
    for f in (0, 3):  # two of the five folds (each check refits every group on every fold)
        own = folds == f
        idx = np.flatnonzero(own)
        shuffled = labels.copy()
        while np.array_equal(shuffled, labels):
            shuffled[idx] = labels[rng.permutation(idx)]
        got = cross_fitted_blind_scores(feats, shuffled, folds)
        changed_elsewhere = False
        for g, s in base.scores.items():
            np.testing.assert_array_equal(got.scores[g][own], s[own], err_msg=f"group {g}, fold {f}")
            changed_elsewhere |= not np.array_equal(got.scores[g][~own], s[~own])
        assert changed_elsewhere  # the other folds' classifiers did learn from fold f's labels


def test_no_sample_is_scored_by_a_classifier_that_saw_it():
    """Each sample's own column identifies it: a classifier that saw it would score it by its
    label; one that did not has no weight there, so every fold's samples get one score."""
    n = 30
    labels = np.r_[np.ones(15, dtype=np.int64), np.zeros(15, dtype=np.int64)]
    ident = np.eye(n) * np.where(labels == 1, 1.0, -1.0)[:, None]
    feats = BlindFeatures(groups={"meta": ident}, names={"meta": tuple(f"id_{i}" for i in range(n))})
    folds = _folds(labels)
    score = cross_fitted_blind_scores(feats, labels, folds).scores["meta"]
    for f in range(5):
        assert np.ptp(score[folds == f]) < 1e-12, f  # the same prediction for every sample of the fold
    # the same classifier scoring the samples it was fitted on separates them perfectly
    x = StandardScaler().fit_transform(ident)
    assert roc_auc_score(labels, LogisticRegression(max_iter=5000).fit(x, labels).predict_proba(x)[:, 1]) == 1.0


# --------------------------------------------------------------------------- Model & data page


@pytest.mark.slow
def test_model_page_blind_encoder_field_reaches_the_configuration(clip_dir, tmp_path, monkeypatch):
    """The optional "Blind baseline encoder" field of the new-analysis form: a missing folder is a
    one-line error naming the option and the path (the field keeps it); a real one reaches the
    analysis configuration and the cost estimate."""
    from streamlit.testing.v1 import AppTest

    from ldminv_core import demo

    if not demo.demo_available():
        pytest.skip("the demo assets are not in this checkout")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    rng = np.random.default_rng(0)  # a run to open, so that the app does not compute the demo first
    opened = write_run(tmp_path / "runs" / "r", terms=rng.gamma(2.0, 1.0, size=(8, 2, 1, 2, 2)).astype(np.float32),
                       influence=rng.normal(size=(8, 1, 2, 2)).astype(np.float32), log_volume=rng.normal(size=8),
                       labels=np.r_[np.ones(4), np.zeros(4)], timesteps=[0, 10])
    monkeypatch.setenv("LDMINV_RUN", str(opened.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "app.py"), default_timeout=120).run()
    at.switch_page("pages/model_data.py").run()
    assert not at.exception and at.text_input(key="new_blind_encoder").value == ""
    at.number_input(key="new_limit").set_value(4).run()  # a quick estimate: 4 + 4 demo images
    at.number_input(key="new_batch").set_value(4).run()
    missing = tmp_path / "no-such-encoder"
    at.text_input(key="new_blind_encoder").input(str(missing)).run()
    at.button(key="new_estimate").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("--blind-encoder" in e and str(missing) in e for e in errors), errors
    assert at.text_input(key="new_blind_encoder").value == str(missing) and "cost_preview" not in at.session_state
    at.text_input(key="new_blind_encoder").input(str(clip_dir)).run()
    at.button(key="new_estimate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert f"blind_encoder={str(clip_dir)!r}" in at.session_state["cost_preview"][0]


def test_the_run_cache_folder_of_blind_features_is_the_run_folders_cache():
    from ldminv_core.data import blind_features as data_blind
    from ldminv_core.runs.layout import CACHE_DIR

    assert data_blind.RUN_CACHE_DIR == CACHE_DIR
