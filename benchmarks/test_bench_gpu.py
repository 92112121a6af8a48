"""Checks that the GPU benchmark times the right computations (run: pytest benchmarks/test_bench_gpu.py).

The benchmark's code path runs on the tiny SD 1.x configuration on the CPU (``--tiny --device
cpu``). Oracles: the geometry it timed is recomputed by ``decoder_geometry`` with the settings
``analyze`` uses by default and checked against float64 SVDs of the autograd Jacobian of the
same decoder at the same latents; the attack rows' result shapes follow the attack definitions
(T timesteps per maskable attack, CLiD's window stored as one step, one PFAMI score per image).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import bench_gpu
from ldminv_core import geometry

TIMESTEPS = [0, 100, 200]
IMAGES = 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (no spinning OpenMP workers on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run():
    return bench_gpu.run_family(bench_gpu.FAMILIES["sd1"], tiny=True, device=torch.device("cpu"),
                                dtype=torch.float32, images=IMAGES, geometry_samples=2,
                                attack_names=list(bench_gpu.ATTACKS), timesteps=TIMESTEPS, repeats=1)


def test_rows_cover_every_step_with_a_time(run):
    steps = [r["step"] for r in run.rows]
    assert steps == ["jvp", "vjp", "geometry"] + [f"attack:{a}" for a in bench_gpu.ATTACKS]
    for r in run.rows:
        assert "error" not in r, r
        assert r["family"] == "sd1"
        assert math.isfinite(r["seconds"]) and r["seconds"] > 0
        assert r["peak_gib"] is None and r["resident_gib"] is None  # CPU: no CUDA memory figures
    per = {r["step"]: r["per"] for r in run.rows}
    assert per["jvp"] == per["vjp"] == "product" and per["geometry"] == "sample"
    assert all(per[f"attack:{a}"] == "image" for a in bench_gpu.ATTACKS)
    lines = bench_gpu.table(run.rows).splitlines()
    assert len(lines) == 2 + len(run.rows)
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(bench_gpu.TABLE_HEADER)
    assert all(line.startswith("| sd1") for line in lines[2:])


def test_attack_rows_timed_the_attacks_as_defined(run):
    shapes = {r["step"]: r["shape"] for r in run.rows if r["step"].startswith("attack:")}
    lat = list(run.info["latent"])
    for name in ("sima", "pia", "loss", "secmi"):
        assert shapes[f"attack:{name}"] == [IMAGES, len(TIMESTEPS), *lat]
    assert shapes["attack:clid"] == [IMAGES, 1, *lat]  # the window averaged into one stored step
    assert shapes["attack:pfami"] == [IMAGES]


def test_timed_geometry_is_the_analyze_geometry(run):
    geo_row = next(r for r in run.rows if r["step"] == "geometry")
    assert geo_row["samples"] == run.z.shape[0] == 2
    assert tuple(run.z.shape[1:]) == tuple(run.info["latent"])
    assert run.decode.scaling_factor == bench_gpu.FAMILIES["sd1"].vae["scaling_factor"]
    # the engine the geometry's auto choice picks for a VaeDecoder it knows
    assert geo_row["engine"] == run.geometry.engine == "layerwise"
    # analyze's defaults (AnalyzeConfig: topk 50, influence auto, topk log-volume, probes auto), no plan
    again = geometry.decoder_geometry(run.decode, run.z, k=50, influence="auto", log_volume="topk",
                                      probes=geometry.HUTCHINSON_RANK_PROBES, seed=0)
    assert torch.allclose(run.geometry.log_volume, again.log_volume, rtol=1e-6, atol=0)
    assert torch.allclose(run.geometry.influence, again.influence, rtol=1e-6, atol=1e-6)
    # oracle: float64 SVD of the autograd Jacobian of the same decoder at the same latents
    for i in range(run.z.shape[0]):
        with sdpa_kernel(SDPBackend.MATH):  # forward-mode AD through the attention
            jac = torch.autograd.functional.jacobian(run.decode, run.z[i:i + 1], vectorize=True,
                                                     strategy="forward-mode")
        jac = jac.reshape(-1, run.z[0].numel()).double()
        sv = torch.linalg.svdvals(jac)
        lv = sv[:50].log().sum()
        infl = 0.5 * torch.log(jac.square().sum(0) + 1e-12)
        assert float(run.geometry.log_volume[i]) == pytest.approx(float(lv), rel=1e-4)
        assert torch.allclose(run.geometry.influence[i].double().flatten(), infl, atol=1e-3)


def test_main_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    doc = bench_gpu.main(["--dry-run", "--device", "cpu", "--tiny", "--families", "sd1", "--attacks", "sima",
                          "--timesteps", "0,100", "--images", "1", "--geometry-samples", "1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(doc["rows"], default=str))
    assert [r["step"] for r in doc["rows"]] == ["jvp", "vjp", "geometry", "attack:sima"]
    printed = capsys.readouterr().out
    assert bench_gpu.table(doc["rows"]) in printed


def test_without_cuda_it_skips(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_gpu.main(["--out", str(tmp_path / "gpu.json")]) is None
    assert capsys.readouterr().out.strip() == "no CUDA device: skipped"
    assert not (tmp_path / "gpu.json").exists()
