"""Tests of ldminv_core.models.class_conditional: a class-conditional UNet2DModel and DiT.

The SimA / PIA / Loss terms at two timesteps must equal a direct call of the diffusers model
with the class labels (``unet(x, t, class_labels=y)``, ``transformer(x, timestep=t,
class_labels=y)`` with the learned-sigma half dropped as ``pipeline_dit.py`` drops it) to 1e-5;
an image without a label falls back to DiT's null class and is refused, naming the ``label``
column, by a model without one; labels are read from metadata.jsonl and metadata.csv.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.attacks.common import sample_noise
from ldminv_core.attacks.residual import LOSS_STREAM
from ldminv_core.data.image_folders import load_image_folder
from ldminv_core.errors import DataLoadError, LdminvError
from ldminv_core.models.class_conditional import (
    DiTPredictor,
    ClassUNetPredictor,
    MissingLabelError,
    class_conditional_kind,
    class_conditional_predictor,
)
from tests.tiny_families import build_tiny_class_unet as _class_unet_folder
from tests.tiny_families import tiny_class_unet as _class_unet
from tests.tiny_families import tiny_dit as _dit
from tests.tiny_families import write_labelled_folder as _labelled_folder
from tests.tiny_models import tiny_scheduler, write_image_folder

TIMESTEPS = [7, 60]
P = 2.0


def _direct_eps(model, z, t, labels, channels=4):
    ts = torch.full((z.shape[0],), t, dtype=torch.long)
    y = torch.tensor(labels, dtype=torch.long)
    with torch.no_grad():
        if type(model).__name__ == "UNet2DModel":
            out = model(z, ts, class_labels=y).sample
        else:
            out = model(z, timestep=ts, class_labels=y).sample
    if model.config.out_channels // 2 == channels:  # pipeline_dit.py: learned sigma, keep the mean half
        out = out[:, :channels]
    return out


def _direct_terms(name, model, sched, z0, labels, ids, seed, p=P):
    a = sched.alphas_cumprod.to(torch.float64)
    sa, s1a = a.sqrt().tolist(), (1 - a).sqrt().tolist()
    terms = []
    if name == "loss":
        noise = sample_noise(seed, ids, LOSS_STREAM, (len(TIMESTEPS), *z0.shape[1:]))
    e0 = _direct_eps(model, z0, 0, labels)
    for k, t in enumerate(TIMESTEPS):
        if name == "sima":
            terms.append(_direct_eps(model, z0, t, labels).abs() ** p)
        else:
            e = e0 if name == "pia" else noise[:, k]
            z_t = z0 * sa[t] + e * s1a[t]
            terms.append((e - _direct_eps(model, z_t, t, labels)).abs() ** p)
    return torch.stack(terms, dim=1)


@pytest.mark.parametrize("family", ["class_unet", "timestep_unet", "dit", "dit_legacy"])
@pytest.mark.parametrize("name", ["sima", "pia", "loss"])
def test_terms_equal_a_direct_model_call_with_the_class_labels(family, name):
    if family.startswith("dit"):
        model = _dit(legacy=family == "dit_legacy")
    else:
        model = _class_unet(embed_type="timestep" if family == "timestep_unet" else None)
    sched = tiny_scheduler()
    pred = class_conditional_predictor(model, sched)
    assert isinstance(pred, DiTPredictor if family.startswith("dit") else ClassUNetPredictor)
    z0 = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    labels = [0, 2, None] if family.startswith("dit") else [0, 2, 1]
    ids = np.array([4, 9, 2])
    got = attack_terms(name, pred, z0, timesteps=TIMESTEPS, captions=labels, sample_ids=ids, p=P, seed=3)
    direct = [pred.null_class if y is None else y for y in labels]
    want = _direct_terms(name, model, sched, z0, direct, ids, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the labels matter: another class changes the terms
    other = attack_terms(name, pred, z0, timesteps=TIMESTEPS, captions=[1, 1, 1], sample_ids=ids, p=P, seed=3)
    assert not torch.allclose(other, got)


def test_dit_null_class_is_num_classes_and_call_matches():
    model = _dit()
    pred = class_conditional_predictor(model, tiny_scheduler())
    assert (pred.num_classes, pred.null_class) == (5, 5)
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pred(z, 30), _direct_eps(model, z, 30, [5, 5]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred(z, 30, pred.encode_prompts([3, 4])), _direct_eps(model, z, 30, [3, 4]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(LdminvError, match="outside the model's classes 0..5"):
        pred.encode_prompts([6])


def test_a_folder_without_labels_on_a_model_without_null_class_is_refused_naming_the_column():
    pred = class_conditional_predictor(_class_unet(), tiny_scheduler())
    assert pred.null_class is None
    z0 = torch.randn(2, 4, 4, 4)
    for captions in (None, [None, None], [1, None]):
        with pytest.raises(MissingLabelError, match="add a 'label' column"):
            attack_terms("sima", pred, z0, timesteps=TIMESTEPS, captions=captions)
    with pytest.raises(LdminvError, match="integer class label"):
        pred.encode_prompts(["a cat", "a dog"])


def test_detection_and_refusals():
    assert class_conditional_kind("UNet2DModel", {"num_class_embeds": 10}) == "class_unet"
    assert class_conditional_kind("UNet2DModel", {}) is None
    assert class_conditional_kind("DiTTransformer2DModel", {"num_embeds_ada_norm": 1000}) == "dit"
    assert class_conditional_kind("Transformer2DModel", {"num_embeds_ada_norm": 1000,
                                                         "norm_type": "ada_norm_zero"}) == "dit"
    assert class_conditional_kind("Transformer2DModel", {"norm_type": "layer_norm"}) is None
    with pytest.raises(LdminvError, match="class_embed_type='identity'"):
        class_conditional_predictor(_class_unet(embed_type="identity"), tiny_scheduler())
    from tests.tiny_models import tiny_unet

    with pytest.raises(LdminvError, match="expected a class-conditional UNet2DModel"):
        class_conditional_predictor(tiny_unet(), tiny_scheduler())


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_labels_are_read_from_metadata(tmp_path, kind):
    paths = write_image_folder(tmp_path, 3, formats=("png",))
    names = [p.name for p in paths]
    if kind == "jsonl":
        rows = [{"file_name": names[0], "label": 2}, {"file_name": names[1], "label": None},
                {"file_name": names[2], "label": 0, "text": "zero"}]
        (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        (tmp_path / "metadata.csv").write_text(f"file_name,label\n{names[0]},2\n{names[1]},\n{names[2]},0\n")
    s = load_image_folder(tmp_path, channels=1, resolution=16)
    assert s.labels == [2, None, 0]
    assert s.captions == ([None, None, "zero"] if kind == "jsonl" else [None, None, None])
    assert not s.report.warnings  # a labelled folder without captions is not worth a warning


def test_folders_without_labels_and_bad_labels(tmp_path):
    write_image_folder(tmp_path / "plain", 2, formats=("png",), captions=True)
    s = load_image_folder(tmp_path / "plain", channels=1, resolution=16)
    assert s.labels == [None, None] and all(isinstance(c, str) for c in s.captions)
    paths = write_image_folder(tmp_path / "bad", 1, formats=("png",))
    (tmp_path / "bad" / "metadata.csv").write_text(f"file_name,label\n{paths[0].name},cat\n")
    with pytest.raises(DataLoadError, match="metadata.csv, line 2: 'label' must be a non-negative integer"):
        load_image_folder(tmp_path / "bad", channels=1, resolution=16)


# ---------------------------------------------------------------------------- end to end

def test_class_unet_loads_and_analyzes_with_the_labels(tmp_path):
    import pandas as pd

    from ldminv_core.models.loading import load_model
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis

    model_dir = _class_unet_folder(tmp_path / "model")
    model = load_model(model_dir)
    assert isinstance(model.predictor, ClassUNetPredictor) and model.is_conditional
    assert getattr(model.family, "name", "class_unet") == "class_unet"
    members = _labelled_folder(tmp_path / "members", 3, [0, 1, 2], 1)
    heldout = _labelled_folder(tmp_path / "heldout", 3, [2, 2, 0], 2)
    cfg = dict(model=str(model_dir), members=str(members), heldout=str(heldout), attacks="sima,pia,loss",
               timesteps="7,60", batch_size=4, device="cpu", seed=3)
    run = run_analysis(AnalyzeConfig(out=str(tmp_path / "run"), **cfg))
    samples = pd.read_parquet(run / "samples.parquet")
    assert samples["label"].tolist() == [0, 1, 2, 2, 2, 0]
    from ldminv_core.pipeline.cost import estimate_cost

    assert estimate_cost(AnalyzeConfig(out=str(tmp_path / "never"), **cfg), model=model).disk_bytes > 0
    z = torch.from_numpy(np.load(run / "latents.npy"))
    labels = [0, 1, 2, 2, 2, 0]
    for name in ("sima", "pia", "loss"):  # default p = 4, the run's seed 3, sample ids 0..5
        got = torch.from_numpy(np.load(run / "residuals" / f"{name}.npy").astype(np.float32))
        want = _direct_terms(name, model.predictor.model, tiny_scheduler(), z, labels, np.arange(6), 3, p=4)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # an unfinished run (stopped in its encode stage) is not resumed over other labels
    from ldminv_core.errors import RunError
    from ldminv_core.pipeline.batches import AnalysisCancelled

    part = AnalyzeConfig(out=str(tmp_path / "run_part"), **{**cfg, "batch_size": 2})
    with pytest.raises(AnalysisCancelled):
        run_analysis(part, should_stop=lambda: True)
    _labelled_folder(members, 3, [1, 1, 2], 1)
    with pytest.raises(RunError, match="other class labels"):
        run_analysis(part)
    # the same folders without labels are refused before anything runs, naming the column
    for folder in (members, heldout):
        (folder / "metadata.jsonl").unlink()
    with pytest.raises(DataLoadError, match="add a 'label' column"):
        run_analysis(AnalyzeConfig(out=str(tmp_path / "run2"), **cfg))
    assert not (tmp_path / "run2" / "latents.npy").exists()


def test_dit_folder_loads_and_unlabelled_images_get_the_null_class(tmp_path):
    import pandas as pd

    from ldminv_core.models.loading import load_model
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis
    from tests.tiny_models import tiny_vae

    model_dir = tmp_path / "dit"
    tiny_vae(image_channels=1, seed=0).save_pretrained(model_dir / "vae")
    _dit().save_pretrained(model_dir / "transformer")
    tiny_scheduler().save_pretrained(model_dir / "scheduler")
    (model_dir / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    model = load_model(model_dir)
    assert isinstance(model.predictor, DiTPredictor) and model.predictor.null_class == 5
    assert getattr(model.family, "name", "dit") == "dit"
    members = _labelled_folder(tmp_path / "members", 2, [4, None], 1)
    heldout = _labelled_folder(tmp_path / "heldout", 2, None, 2)  # no metadata: the null class
    run = run_analysis(AnalyzeConfig(model=str(model_dir), members=str(members), heldout=str(heldout),
                                     out=str(tmp_path / "run"), attacks="sima,pia", timesteps="7,60",
                                     batch_size=4, device="cpu"))
    samples = pd.read_parquet(run / "samples.parquet")
    assert samples["label"].isna().tolist() == [False, True, True, True]
    z = torch.from_numpy(np.load(run / "latents.npy"))
    for name in ("sima", "pia"):
        got = torch.from_numpy(np.load(run / "residuals" / f"{name}.npy").astype(np.float32))
        # sima / pia default to p = 4; None rows are conditioned on the null class 5
        want = _direct_terms(name, model.predictor.model, tiny_scheduler(), z, [4, 5, 5, 5], np.arange(4), 0, p=4)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cli_analyze_and_report_on_a_labelled_class_unet(tmp_path, capsys):
    from ldminv_core.__main__ import main

    model_dir = _class_unet_folder(tmp_path / "model")
    members = _labelled_folder(tmp_path / "members", 3, [0, 1, 2], 1)
    heldout = _labelled_folder(tmp_path / "heldout", 3, [2, 1, 0], 2)
    out = tmp_path / "run"
    args = ["analyze", "--model", str(model_dir), "--members", str(members), "--heldout", str(heldout),
            "--out", str(out), "--attacks", "sima", "--timesteps", "7,60", "--device", "cpu"]
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text()).get("family", "class_unet") == "class_unet"
    capsys.readouterr()
    assert main(["report", str(out), "--json", "--attack", "sima"]) == 0
    assert json.loads(capsys.readouterr().out)
