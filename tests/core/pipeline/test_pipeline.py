"""End-to-end tests of the analysis pipeline, the report and the command line.

Tiny random diffusers pipelines (tests/tiny_models.py) on 8 + 8 images, three timesteps.
Oracles: direct diffusers calls and torch.autograd.functional.jacobian for the stored arrays,
sklearn's roc_auc_score / roc_curve and numpy for every number of the report, and an
uninterrupted run for resumed ones (bit-identical arrays).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
from sklearn.metrics import roc_auc_score, roc_curve
from transformers import AutoTokenizer, CLIPTextModel

from ldminv_core.__main__ import main
from ldminv_core.pipeline.batches import AnalysisCancelled
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import estimate_cost
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.errors import ModelLoadError, RunError, UnknownNameError
from ldminv_core.data.image_folders import load_image_folder
from ldminv_core.masks import random_drop_mask
from ldminv_core.report import build_report, format_report
from ldminv_core.runs import Run, StageNotReadyError, run_status

REPO = Path(__file__).resolve().parents[3]
ALL_ATTACKS = "sima,pia,loss,secmi,pfami"
TIMESTEPS = "0:30:10"
BATCH = 8


def _config(model, dirs, out, **kw) -> AnalyzeConfig:
    base = dict(attacks=ALL_ATTACKS, timesteps=TIMESTEPS, batch_size=BATCH, device="cpu")
    base.update(kw)
    return AnalyzeConfig(model=str(model), members=str(dirs[0]), heldout=str(dirs[1]), out=str(out), **base)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    out = {rel: np.load(path / rel) for rel in ("latents.npy", "influence.npy")}
    for sub in ("residuals", "scores"):
        for f in sorted((path / sub).glob("*.npy")):
            out[f"{sub}/{f.name}"] = np.load(f)
    out["log_volume"] = pd.read_parquet(path / "samples.parquet")["log_volume"].to_numpy()
    return out


def _assert_same_arrays(a: Path, b: Path) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for key in xa:
        assert xa[key].dtype == xb[key].dtype, key
        assert np.array_equal(xa[key], xb[key]), f"{key} differs"


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory, tiny_uncond_model, tiny_image_dirs) -> Path:
    out = tmp_path_factory.mktemp("analyze") / "uncond"
    return run_analysis(_config(tiny_uncond_model, tiny_image_dirs, out))


# ----------------------------------------------------------------------------- oracles


def _sk_tpr_at_1fpr(labels, scores) -> float:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= 0.01].max())


def _sk_metrics(labels, scores) -> dict:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(labels, scores),
        "tpr_at_1fpr": float(tpr[fpr <= 0.01].max()),
        "asr": float(((tpr + 1 - fpr) / 2).max()),
    }


def _assert_metrics(got: dict, labels, scores) -> None:
    for key, value in _sk_metrics(labels, scores).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def _check_report(path: Path, report: dict, drop: float = 40.0, attacks: list[str] | None = None) -> None:
    """Every number of ``report`` recomputed from the stored arrays with numpy and sklearn."""
    data = json.loads((path / "run.json").read_text())
    samples = pd.read_parquet(path / "samples.parquet")
    labels = (samples["split"] == "member").to_numpy().astype(int)
    log_volume = samples["log_volume"].to_numpy()
    n = len(labels)
    assert report["n_members"] == labels.sum() and report["n_heldout"] == n - labels.sum()
    assert report["latent_shape"] == data["latent_shape"]
    assert list(report["attacks"]) == (list(data["attacks"]) if attacks is None else attacks)
    groups = np.array_split(np.argsort(log_volume, kind="stable"), 4)
    for name, rep in report["attacks"].items():
        if name == "pfami":
            scores = np.load(path / "scores" / "pfami.npy").astype(np.float64)
            assert rep["best_t"] is None and rep["per_t"] is None
            assert rep["masked"] is None and rep["random"] is None
        else:
            terms = np.load(path / "residuals" / f"{name}.npy").astype(np.float64)
            t_list = data["attacks"][name]["timesteps"]
            all_scores = -terms.sum(axis=(2, 3, 4))
            aurocs = [roc_auc_score(labels, all_scores[:, i]) for i in range(len(t_list))]
            assert rep["per_t"]["t"] == t_list
            assert rep["per_t"]["auroc"] == pytest.approx(aurocs, abs=1e-12)
            tprs = [_sk_tpr_at_1fpr(labels, all_scores[:, i]) for i in range(len(t_list))]
            assert rep["per_t"]["tpr_at_1fpr"] == pytest.approx(tprs, abs=1e-12)
            bi = int(np.argmax(aurocs))
            assert rep["best_t"] == t_list[bi]
            scores = all_scores[:, bi]
            flat = terms[:, bi].reshape(n, -1)
            d = flat.shape[1]
            n_drop = round(d * drop / 100)
            infl = np.load(path / "influence.npy").reshape(n, -1)
            keep = np.ones_like(flat, dtype=bool)
            for i in range(n):
                keep[i, np.argsort(infl[i], kind="stable")[:n_drop]] = False
            assert rep["masked"]["drop_percent"] == drop
            _assert_metrics(rep["masked"], labels, -(flat * keep).sum(axis=1))
            # the random control: one arm per seed 0..4, reported as their mean
            assert rep["random"]["seeds"] == [0, 1, 2, 3, 4]
            per_seed = []
            for seed in rep["random"]["seeds"]:
                rkeep = random_drop_mask((n, *terms.shape[2:]), drop, seed=seed).reshape(n, -1)
                assert (rkeep.sum(axis=1) == d - n_drop).all()
                per_seed.append(_sk_metrics(labels, -(flat * rkeep).sum(axis=1)))
            for key in ("auroc", "tpr_at_1fpr", "asr"):
                assert rep["random"]["per_seed"][key] == pytest.approx([m[key] for m in per_seed], abs=1e-12)
                assert rep["random"][key] == pytest.approx(np.mean([m[key] for m in per_seed]), abs=1e-12)
        _assert_metrics(rep["baseline"], labels, scores)
        lo, hi = rep["baseline"]["auroc_ci"]
        assert 0 <= lo <= hi <= 1
        assert [q["q"] for q in rep["quartiles"]] == [1, 2, 3, 4]
        for q, idx in zip(rep["quartiles"], groups):
            assert q["n"] == len(idx)
            if len(set(labels[idx])) < 2:
                assert q["auroc"] is None
            else:
                assert q["auroc"] == pytest.approx(roc_auc_score(labels[idx], scores[idx]), abs=1e-12)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_unconditional_end_to_end(uncond_run, tiny_uncond_model, tiny_image_dirs):
    run = Run.open(uncond_run)
    data = run.settings
    assert data["status"] == "complete"
    assert run.latent_shape == (4, 4, 4) and (run.n_members, run.n_heldout) == (8, 8)
    geo = data["geometry"]
    assert {k: geo[k] for k in ("topk", "influence", "probes", "log_volume_method", "log_volume", "probes_used",
                                "probes_requested")} == {
        "topk": 50, "influence": "exact", "probes": None, "log_volume_method": "exact", "log_volume": "topk",
        "probes_used": None, "probes_requested": "auto"}  # the exact influence uses no Hutchinson probes
    # the cost model's plan, what it predicted and what the stage measured
    assert geo["plan"]["influence_method"] == "exact" and geo["plan"]["products"] == {"jvp": 64, "vjp": 0}
    assert geo["plan"]["predicted_seconds_per_sample"] > 0 and geo["measured_seconds_per_sample"] > 0
    assert geo["plan_summary"].startswith("geometry: influence exact, log-volume exact (topk k=50): 64 JVPs, predicted ")
    assert data["attacks"]["sima"]["timesteps"] == [0, 10, 20] and data["attacks"]["secmi"]["p"] == 2
    assert data["model"] == str(tiny_uncond_model.resolve())
    assert set(data["versions"]) >= {"torch", "diffusers", "numpy", "ldminv"}
    assert data["load_report"]["members"]["read"] == 8
    assert set(data["timings"]) >= {"encode", "geometry", "sima", "pfami"}
    samples = run.samples
    assert samples["sample_id"].tolist() == list(range(16))
    assert samples["split"].tolist() == ["member"] * 8 + ["heldout"] * 8
    assert all(Path(p).is_absolute() for p in samples["path"])
    for name in ("sima", "pia", "loss", "secmi"):
        assert run.terms(name).shape == (16, 3, 4, 4, 4) and run.terms(name).dtype == np.float32
    assert run.pfami_scores().shape == (16,)

    # latents: direct diffusers encoder on the loaded images
    vae = AutoencoderKL.from_pretrained(tiny_uncond_model, subfolder="vae").eval()
    sf = vae.config.scaling_factor
    imgs = load_image_folder(tiny_image_dirs[0], channels=1, resolution=16).images
    with torch.no_grad():
        z_ref = vae.encode(imgs).latent_dist.mean * sf
    np.testing.assert_allclose(run.latents[:8], z_ref.numpy(), rtol=1e-5, atol=1e-6)

    # geometry of sample 0: Jacobian of z -> D(z / sf) by autograd
    z0 = torch.from_numpy(np.array(run.latents[0]))
    jac = torch.autograd.functional.jacobian(lambda z: vae.decode(z[None] / sf).sample[0], z0)
    jac = jac.reshape(-1, 64).double()
    sv = torch.linalg.svdvals(jac)
    assert run.log_volume[0] == pytest.approx(torch.log(sv[:50]).sum().item(), rel=1e-4, abs=1e-4)
    infl_ref = 0.5 * torch.log(jac.square().sum(0) + 1e-12)
    np.testing.assert_allclose(run.influence[0].reshape(-1), infl_ref.numpy(), rtol=1e-4, atol=1e-4)

    # SimA terms of sample 3 at t = 10: |eps_hat(z0, 10)|^4 from the UNet directly
    unet = UNet2DModel.from_pretrained(tiny_uncond_model, subfolder="unet").eval()
    z3 = torch.from_numpy(np.array(run.latents[3:4]))
    with torch.no_grad():
        eps = unet(z3, torch.tensor([10])).sample
    np.testing.assert_allclose(run.terms("sima")[3, 1], eps[0].abs().pow(4).numpy(), rtol=1e-4, atol=1e-7)

    report = build_report(run)
    _check_report(uncond_run, report)
    json.dumps(report, allow_nan=False)
    text = format_report(report)
    assert "sima" in text and "pfami" in text and "random (5 seeds)" in text and "40%" in text
    assert "protocol standard:" in text and text.count("\n- [") == len(report["findings"])


def test_report_for_one_attack_and_other_drop(uncond_run):
    report = build_report(uncond_run, attack="loss", drop=25.0)
    assert list(report["attacks"]) == ["loss"]
    _check_report(uncond_run, report, drop=25.0, attacks=["loss"])
    with pytest.raises(UnknownNameError, match="'nope'"):
        build_report(uncond_run, attack="nope")


@pytest.mark.slow
def test_conditional_end_to_end_uses_captions(tmp_path, tiny_cond_model, tiny_caption_dirs):
    out = run_analysis(_config(tiny_cond_model, tiny_caption_dirs, tmp_path / "cond"))
    run = Run.open(out)
    assert run.settings["is_conditional"] is True
    meta = {}
    for folder in tiny_caption_dirs:
        for line in (folder / "metadata.jsonl").read_text().splitlines():
            row = json.loads(line)
            meta[str((folder / row["file_name"]).resolve())] = row["text"]
    assert run.samples["caption"].tolist() == [meta[p] for p in run.samples["path"]]

    # SimA terms of sample 5 at t = 20 with its own caption, by direct diffusers calls
    tok = AutoTokenizer.from_pretrained(tiny_cond_model, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(tiny_cond_model, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(tiny_cond_model, subfolder="unet").eval()
    caption = run.samples["caption"][5]
    ids = tok([caption], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    z = torch.from_numpy(np.array(run.latents[5:6]))
    with torch.no_grad():
        eps = unet(z, torch.tensor([20]), encoder_hidden_states=te(ids.input_ids)[0]).sample
    np.testing.assert_allclose(run.terms("sima")[5, 2], eps[0].abs().pow(4).numpy(), rtol=1e-4, atol=1e-7)
    ids_empty = tok([""], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        eps_empty = unet(z, torch.tensor([20]), encoder_hidden_states=te(ids_empty.input_ids)[0]).sample
    assert not np.allclose(run.terms("sima")[5, 2], eps_empty[0].abs().pow(4).numpy(), rtol=1e-4, atol=1e-7)

    _check_report(out, build_report(out))


# ----------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_cancel_mid_attack_and_mid_geometry_then_resume(tmp_path, uncond_run, tiny_uncond_model, tiny_image_dirs):
    cfg = _config(tiny_uncond_model, tiny_image_dirs, tmp_path / "resumed")
    seen: list[tuple[str, int, int]] = []
    stop_at = {"stage": "loss"}

    def progress(stage, done, total):
        seen.append((stage, done, total))

    def should_stop():
        stage, done, _ = seen[-1]
        return stage == stop_at["stage"] and done == BATCH

    # stages run cheap-first: encode, the maskable attacks, geometry, then PFAMI
    with pytest.raises(AnalysisCancelled, match="loss"):
        run_analysis(cfg, progress=progress, should_stop=should_stop)
    assert [s for s, d, _ in seen if d == 0] == ["encode", "blind", "sima", "pia", "loss"]
    data = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert data["status"] == "running" and data["progress"]["loss"] == BATCH
    assert data["stages"] == {"encode": True, "blind": True, "sima": True, "pia": True}
    assert run_status(tmp_path / "resumed") == "unfinished"
    with pytest.raises(RunError, match="unfinished"):
        Run.open(tmp_path / "resumed")

    # the partial run opens with exactly its finished stages; the half-written loss array is invisible
    part = Run.open(tmp_path / "resumed", partial=True)
    assert part.partial and part.stages_done == ("encode", "blind", "sima", "pia")
    assert part.attacks == ["sima", "pia"] and part.pending_attacks == ["loss", "secmi", "pfami"]
    assert part.pending_stages == ("loss", "secmi", "geometry", "pfami") and not part.has_geometry
    for stage_output in (lambda: part.influence, lambda: part.log_volume, lambda: part.terms("loss")):
        with pytest.raises(StageNotReadyError):
            stage_output()
    whole = Run.open(uncond_run)
    np.testing.assert_array_equal(part.terms("pia"), whole.terms("pia"))
    np.testing.assert_array_equal(part.latents, whole.latents)

    # other settings are refused, before anything is loaded
    other = _config(tiny_uncond_model, tiny_image_dirs, tmp_path / "resumed", timesteps="0:20:10")
    with pytest.raises(RunError, match="different settings"):
        run_analysis(other)

    stop_at["stage"] = "geometry"
    seen.clear()
    with pytest.raises(AnalysisCancelled, match="geometry"):
        run_analysis(cfg, progress=progress, should_stop=should_stop)
    assert seen[0] == ("loss", BATCH, 16)  # continued from the last completed batch
    assert ("encode", 0, 16) not in seen
    data = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert data["progress"]["geometry"] == BATCH and not data["stages"].get("geometry")
    part = Run.open(tmp_path / "resumed", partial=True)
    assert part.attacks == ["sima", "pia", "loss", "secmi"] and not part.has_geometry

    seen.clear()
    run_analysis(cfg, progress=progress)
    assert seen[0] == ("geometry", BATCH, 16)
    assert run_status(tmp_path / "resumed") == "complete"
    full = Run.open(tmp_path / "resumed", partial=True)
    assert not full.partial and full.pending_stages == () and full.has_geometry
    _assert_same_arrays(uncond_run, tmp_path / "resumed")


@pytest.mark.slow
def test_killed_cli_run_resumes_bit_identically(tmp_path, uncond_run, tiny_uncond_model, tiny_image_dirs):
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "ldminv_core", "analyze",
        "--model", str(tiny_uncond_model), "--members", str(tiny_image_dirs[0]),
        "--heldout", str(tiny_image_dirs[1]), "--out", str(out), "--attacks", ALL_ATTACKS,
        "--timesteps", TIMESTEPS, "--batch-size", str(BATCH), "--device", "cpu", "--threads", "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            killed = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    progress = json.loads((out / "run.json").read_text()).get("progress", {})
                except (OSError, ValueError):
                    progress = {}
                if progress.get("geometry", 0) >= BATCH:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.02)
        finally:
            if proc.poll() is None and not killed:
                proc.kill()
            proc.wait()
    assert killed, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
    assert "cost estimate" in log.read_text()
    assert run_status(out) == "unfinished"
    with pytest.raises(RunError):
        Run.open(out)
    run_analysis(_config(tiny_uncond_model, tiny_image_dirs, out))
    _assert_same_arrays(uncond_run, out)


def test_complete_run_is_kept_unless_forced(tmp_path, tiny_uncond_model, tiny_image_dirs):
    cfg = _config(tiny_uncond_model, tiny_image_dirs, tmp_path / "small", attacks="sima", limit=2)
    path = run_analysis(cfg)
    first = json.loads((path / "run.json").read_text())
    assert (first["n_members"], first["n_heldout"]) == (2, 2)
    assert run_analysis(cfg) == path
    assert json.loads((path / "run.json").read_text()) == first
    (path / "marker").write_text("from the first run")
    cfg.force = True
    run_analysis(cfg)
    again = json.loads((path / "run.json").read_text())
    assert not (path / "marker").exists()  # the folder was recreated
    assert again["status"] == "complete" and again["config"] == first["config"]
    assert again["finished"] >= first["finished"]
    assert np.array_equal(np.load(path / "residuals" / "sima.npy"), Run.open(path).terms("sima"))


def test_output_folder_with_other_content_is_refused(tmp_path, tiny_uncond_model, tiny_image_dirs):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(RunError, match="not empty"):
        run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "mine", attacks="sima", limit=1))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"


def test_estimate_cost_counts_the_work(tiny_uncond_model, tiny_image_dirs, tmp_path):
    est = estimate_cost(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    stages = {s.stage: s for s in est.stages}
    assert list(stages) == ["load", "encode", "blind", "sima", "pia", "loss", "secmi", "geometry", "pfami"]  # run order
    assert (est.n_members, est.n_heldout) == (8, 8) and est.influence_method == "exact"
    assert stages["encode"].encoder_calls == 16
    assert stages["geometry"].decoder_products == 16 * 64  # one JVP per latent coordinate
    assert stages["sima"].unet_calls == 16 * 3 and stages["pia"].unet_calls == 16 * 4
    assert stages["pfami"].unet_calls == 16 * 10 * 11
    assert all(np.isfinite(s.seconds) and s.seconds >= 0 for s in est.stages)
    assert est.total_seconds == pytest.approx(sum(s.seconds for s in est.stages))
    assert est.disk_bytes >= 16 * 64 * 4 * (2 + 3 * 4)  # latents, influence, 4 x (T=3) residuals
    text = str(est)
    assert "geometry" in text and "1,024" in text and "total" in text
    assert est.geometry_timed and "cost model's prediction" not in text
    assert est.geometry_plan is not None and text.splitlines()[1] == f"geometry: {est.geometry_plan.describe()}"


def test_estimate_cost_uses_the_plan_when_timing_the_geometry_would_be_slow(tiny_uncond_model, tiny_image_dirs,
                                                                          tmp_path, monkeypatch):
    """Past the timing budget (Stable Diffusion scale: minutes per sample) the geometry stage is the
    cost model's prediction per sample x samples, and the estimate says so."""
    import ldminv_core.pipeline.cost as cost_mod

    monkeypatch.setattr(cost_mod, "_MAX_TIMED_GEOMETRY_S", 0.0)
    est = estimate_cost(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "never"))
    geo = next(s for s in est.stages if s.stage == "geometry")
    assert not est.geometry_timed
    assert geo.seconds == pytest.approx(16 * est.geometry_plan.predicted_seconds_per_sample)
    assert "geometry: the cost model's prediction" in str(est)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_report_json_and_table(uncond_run, capsys):
    assert main(["report", str(uncond_run), "--json", "--attack", "sima", "--drop", "30"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(build_report(uncond_run, attack="sima", drop=30.0)))
    assert main(["report", str(uncond_run)]) == 0
    assert "baseline" in capsys.readouterr().out
    # every protocol through the CLI: the same object as build_report, the protocol named
    for protocol, extra in (("paper", []), ("honest", ["--folds", "2"])):
        assert main(["report", str(uncond_run), "--json", "--attack", "sima", "--protocol", protocol, *extra]) == 0
        printed = json.loads(capsys.readouterr().out)
        folds = 2 if protocol == "honest" else None
        expected = build_report(uncond_run, attack="sima", protocol=protocol, folds=folds)
        assert printed == json.loads(json.dumps(expected))
        assert printed["protocol"]["name"] == protocol
        assert {f["id"] for f in printed["findings"]} >= {"distortion_quartiles", "masking_vs_baseline",
                                                          "masking_vs_random"}
    honest = printed["attacks"]["sima"]
    assert [len(f["sample_ids"]) for f in honest["baseline"]["folds"]] == [8, 8]
    assert honest["masked"]["realised_fpr_at_1fpr"] is not None
    # bad protocol options: one clear line, exit 2
    assert main(["report", str(uncond_run), "--folds", "3"]) == 2
    assert "--folds" in capsys.readouterr().err
    assert main(["report", str(uncond_run), "--protocol", "honest", "--folds", "1"]) == 2
    assert "folds" in capsys.readouterr().err
    assert main(["report", str(uncond_run), "--seed", "-3"]) == 2
    assert "--seed" in capsys.readouterr().err


def test_cli_user_errors_print_one_line_and_exit_2(tmp_path, tiny_image_dirs, capsys):
    code = main([
        "analyze", "--model", str(tmp_path / "no-model"), "--members", str(tiny_image_dirs[0]),
        "--heldout", str(tiny_image_dirs[1]), "--out", str(tmp_path / "run"),
    ])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "no-model" in err
    assert "Traceback" not in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: run folder")
    code = main(["analyze", "--model", "x"])
    assert code == 2 and "--members" in capsys.readouterr().err


def test_model_errors_surface_through_the_pipeline(tmp_path, tiny_image_dirs):
    with pytest.raises(ModelLoadError, match="does not exist"):
        run_analysis(_config(tmp_path / "missing", tiny_image_dirs, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cli_demo_uses_demo_paths_and_defaults(tmp_path, monkeypatch, capsys, tiny_uncond_model, tiny_image_dirs):
    from ldminv_core import demo

    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tmp_path / "absent")
    assert main(["analyze", "--demo"]) == 2
    assert "python scripts/train_demo.py" in capsys.readouterr().err

    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tiny_uncond_model)
    monkeypatch.setattr(demo, "DEMO_MEMBERS_DIR", tiny_image_dirs[0])
    monkeypatch.setattr(demo, "DEMO_HELDOUT_DIR", tiny_image_dirs[1])
    monkeypatch.setattr(
        demo, "DEMO_ANALYZE_DEFAULTS", {"attacks": ("sima",), "timesteps": "0:30:10", "batch_size": 4, "limit": 3}
    )
    assert main(["analyze", "--demo", "--timesteps", "0:20:10", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "cost estimate" in captured.err and "run complete" in captured.out
    run = Run.open(demo.demo_run_dir())
    assert demo.demo_run_dir() == tmp_path / "home" / "runs" / "demo"
    assert run.settings["config"]["timesteps"] == [0, 10]  # the command line wins over the defaults
    assert run.settings["config"]["limit"] == 3 and run.attacks == ["sima"]
    assert run.settings["model"] == str(tiny_uncond_model.resolve())
    assert main(["analyze", "--demo", "--timesteps", "0:20:10"]) == 0  # complete: nothing recomputed
    assert "already complete;" in capsys.readouterr().out
    assert main(["analyze", "--demo"]) == 2  # other settings: refused, so `analyze && report` cannot report the old run
    err = capsys.readouterr().err
    assert "complete run made with other settings" in err and "timesteps: [0, 10] there, [0, 10, 20] now" in err
    assert "--force" in err


def test_cli_help_does_not_import_torch():
    """``--help`` builds the parser from ldminv_core.choices only (it answers in a fraction of a second)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ldminv_core.__main__ import main\n"
        "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'pandas', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[3]))
    assert out.returncode == 0, out.stderr
    assert "--protocol {standard,paper,honest}" in out.stdout
    assert "HEAVY []" in out.stdout
    from ldminv_core import choices
    from ldminv_core.pipeline import plan

    assert plan.INFLUENCE_METHODS is choices.INFLUENCE_METHODS


@pytest.mark.parametrize(
    "seconds, text",
    [(3.24, "3.2 s"), (45.4, "45 s"), (200, "3 min 20 s"), (26078, "7 h 14 min"), (3600, "1 h 0 min"),
     (float("nan"), "?"), (-1, "?")],
)
def test_durations_read_in_hours_and_minutes(seconds, text):
    from ldminv_core.pipeline.cost import format_duration

    assert format_duration(seconds) == text


# ----------------------------------------------------------------------------- precomputed geometry


def _bundle_from(run_dir: Path, folder: Path, model: Path, **override) -> "PrecomputedGeometry":
    from ldminv_core.geometry.precomputed import load_precomputed, save_precomputed, vae_digest

    run = Run.open(run_dir)
    geo = run.settings["geometry"]
    settings = {"topk": geo["topk"], "influence": geo["influence"], "probes": geo["probes"],
                "log_volume_method": geo["log_volume_method"], "seed": run.settings["seeds"]["seed"], **override}
    save_precomputed(folder, samples=run.samples, latents=np.asarray(run.latents), influence=np.asarray(run.influence),
                     log_volume=run.log_volume, settings=settings, vae_sha256=vae_digest(model), provenance={"test": 1})
    return load_precomputed(folder)


@pytest.mark.slow
def test_precomputed_geometry_used_only_when_it_applies(tmp_path, uncond_run, tiny_uncond_model, tiny_image_dirs):
    good = _bundle_from(uncond_run, tmp_path / "good", tiny_uncond_model)
    seen: list[tuple[str, int, int]] = []
    out = run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "reused"), precomputed=good,
                       progress=lambda s, d, t: seen.append((s, d, t)))
    info = json.loads((out / "run.json").read_text())["geometry"]["precomputed"]
    assert info["used"] is True and "latents agree" in info["reason"]
    assert ("geometry", 16, 16) in seen and ("geometry", 0, 16) not in seen  # not computed batch by batch
    _assert_same_arrays(uncond_run, out)  # identical to the computed run

    # a bundle for other settings is not used: the geometry is computed and the reason recorded
    other = _bundle_from(uncond_run, tmp_path / "other", tiny_uncond_model, topk=3)
    poisoned = other.influence.copy()
    poisoned[:] = 123.0
    import dataclasses

    other = dataclasses.replace(other, influence=poisoned)
    out2 = run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "computed"), precomputed=other)
    info2 = json.loads((out2 / "run.json").read_text())["geometry"]["precomputed"]
    assert info2["used"] is False and "topk" in info2["reason"]
    _assert_same_arrays(uncond_run, out2)

    # latents that disagree (e.g. another encoder) are refused too
    shifted = dataclasses.replace(good, latents=good.latents + 1e-2)
    ok, why = shifted.check(samples=Run.open(uncond_run).samples, latents=np.asarray(Run.open(uncond_run).latents),
                            settings=good.settings, vae_sha256=good.vae_sha256)
    assert not ok and "latents differ" in why
    ok, why = good.check(samples=Run.open(uncond_run).samples.iloc[::-1], latents=np.asarray(Run.open(uncond_run).latents),
                         settings=good.settings, vae_sha256=good.vae_sha256)
    assert not ok and "samples differ" in why
