"""Checks that the benchmarks measure the right computations (run: pytest benchmarks/test_benchmarks.py).

Each test compares a benchmark building block with an independent oracle: the reference
geometry with float64 SVDs of a central-difference Jacobian, the dashboard workload with explicit masks
and sklearn, the UNet call counter with the attack definitions, the scaling measurement with an
exact SVD of the same decoder.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel
from sklearn.metrics import roc_auc_score, roc_curve

from benchmarks import bench_attacks, bench_geometry, bench_scoring, common, run_all, scaling_worker
from benchmarks.reference_geometry import exact_geometry, reference_geometry
from ldminv_core import attacks, geometry, masks, metrics

SF = 0.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (no spinning OpenMP workers on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_decoder():
    """(decode, z, fd_jacobian): a tiny VAE decoder, two latents, and their float64
    central-difference Jacobians (N, P, d), the oracle of these tests."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=8, scaling_factor=SF,
    ).eval().requires_grad_(False)
    decode = lambda z: vae.decode(z / SF).sample  # noqa: E731
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    vae64 = copy.deepcopy(vae).double()
    d, h = z[0].numel(), 1e-5
    steps = (h * torch.eye(d, dtype=torch.float64)).reshape(d, *z.shape[1:])
    jacs = []
    with torch.no_grad():
        for z1 in z.double():
            diff = vae64.decode((z1 + steps) / SF).sample - vae64.decode((z1 - steps) / SF).sample
            jacs.append((diff / (2 * h)).reshape(d, -1).T)
    return decode, z, torch.stack(jacs)


def test_reference_geometry_against_finite_differences(tiny_decoder):
    decode, z, jac = tiny_decoder
    k = 6
    ref = reference_geometry(decode, z, k=k, iters=100, probes=300, keep_jacobians=True)
    assert torch.allclose(ref.jacobians.double(), jac, atol=1e-4, rtol=1e-3)
    exact_lv = torch.linalg.svdvals(jac)[:, :k].log().sum(1)
    assert torch.allclose(ref.log_volume, exact_lv, rtol=1e-4)
    exact_infl = 0.5 * torch.log(jac.square().sum(1) + 1e-12).reshape(z.shape)
    # 300 probes: relative std of G_ii is sqrt(2/300) = 0.08, i.e. 0.04 in 0.5*log units
    assert float((ref.influence - exact_infl).abs().max()) < 0.25
    lv, infl = exact_geometry(ref.jacobians, tuple(z.shape[1:]), k=k)
    assert torch.allclose(lv, exact_lv, rtol=1e-4)
    assert torch.allclose(infl, exact_infl, atol=1e-4)


def test_reference_power_iteration_is_approximate_with_few_rounds(tiny_decoder):
    decode, z, _ = tiny_decoder
    few = reference_geometry(decode, z[:1], k=40, iters=1, probes=2, keep_jacobians=True)
    lv, infl = exact_geometry(few.jacobians, tuple(z.shape[1:]), k=40)
    err = bench_geometry.geometry_errors(few.log_volume, few.influence, lv, infl)
    # one round cannot resolve 40 singular values; 2 probes cannot estimate 64 diagonals
    assert err["max_abs_err_log_volume"] > 1e-3
    assert err["max_abs_err_influence"] > 0.05


def test_ldminv_exact_matches_exact_geometry(tiny_decoder):
    decode, z, jac = tiny_decoder
    g = geometry.decoder_geometry(decode, z, k=10, influence="exact")
    lv, infl = exact_geometry(jac, tuple(z.shape[1:]), k=10)
    err = bench_geometry.geometry_errors(g.log_volume, g.influence, lv, infl)
    assert err["rel_err_log_volume"] < 1e-4
    assert err["max_abs_err_influence"] < 1e-3
    manual = float(((g.log_volume.double() - lv).abs() / lv.abs()).max())
    assert err["rel_err_log_volume"] == pytest.approx(manual)


def test_fit_exponent_recovers_power_law():
    x = np.array([256.0, 1024.0, 4096.0])
    assert common.fit_exponent(x, 3.0 * x**1.7) == pytest.approx(1.7)
    assert math.isnan(common.fit_exponent([1.0], [2.0]))


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    terms, infl, labels = bench_scoring.synthetic_run(
        tmp_path_factory.mktemp("run"), n=120, t=3, latent_shape=(4, 4, 4), seed=3
    )
    w = bench_scoring.ScoringWorkload(terms, infl, labels, t_index=1, seed=5)
    w.build()
    return w


def test_drop_change_matches_explicit_masks_and_sklearn(workload):
    w, p = workload, 35
    out = w.drop_change(p)
    keep = masks.percentile_drop_mask(w.influence, p)
    terms64 = np.asarray(w.terms, dtype=np.float64)[:, 1].reshape(len(w.labels), -1)
    masked = -(terms64 * keep.reshape(len(w.labels), -1)).sum(1)
    rand = -(terms64 * masks.random_drop_mask(keep.shape, p, seed=5).reshape(len(w.labels), -1)).sum(1)
    base = -terms64.sum(1)
    for name, s in (("baseline", base), ("masked", masked), ("random", rand)):
        m, curve = out[name]
        assert m.auroc == pytest.approx(roc_auc_score(w.labels, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(w.labels, s, drop_intermediate=False)
        np.testing.assert_allclose(curve.fpr, fpr)
        np.testing.assert_allclose(curve.tpr, tpr)


def test_manual_variants_agree_with_explicit_sum(workload):
    w = workload
    terms64 = np.asarray(w.terms, dtype=np.float64)[:, 1]
    expected = roc_auc_score(w.labels, -terms64[:, [0, 2]].sum(axis=(1, 2, 3)))
    for fn in (w.manual_change, w.manual_change_one_t, w.manual_change_cached):
        assert fn([0, 2])["manual"][0].auroc == pytest.approx(expected, abs=1e-12)


def test_drop_curve_matches_sklearn_per_percentage(workload):
    w = workload
    curve = w.drop_curve()
    terms64 = np.asarray(w.terms, dtype=np.float64)[:, 1]
    for i in (0, 8, 18):
        p = bench_scoring.DROP_PERCENTS[i]
        s = -(terms64 * masks.percentile_drop_mask(w.influence, p)).sum(axis=(1, 2, 3))
        assert curve["masked"]["auroc"][i] == pytest.approx(roc_auc_score(w.labels, s), abs=1e-12)


def test_unet_call_counter_matches_attack_definitions():
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4,
    ).eval()
    pred = attacks.NoisePredictor.from_components(unet, DDPMScheduler(num_train_timesteps=1000), device="cpu")
    z0 = torch.randn(5, 4, 4, 4)
    ts = [0, 10, 20]
    with bench_attacks.count_unet_calls(unet) as c:
        attacks.attack_terms("sima", pred, z0, timesteps=ts, batch_size=2)
    assert c.batches == [2] * 3 + [2] * 3 + [1] * 3  # one call per timestep per batch
    assert c.unet_s > 0
    with bench_attacks.count_unet_calls(unet) as c:
        attacks.pfami_scores(pred, z0, batch_size=5, timesteps=[0, 50], strengths=[0.9, 0.8])
    assert c.batches == [5] * ((1 + 2) * 2)
    with bench_attacks.count_unet_calls(unet) as c2:
        bench_attacks._bare(unet, c.batches, [0, 50], (4, 4, 4))
    assert c2.batches == c.batches


def test_scaling_worker_log_volume_is_exact_when_k_covers_d():
    row = scaling_worker.measure(latent_size=2, samples=1, k=20, probes=4, chunk_size=64, seed=0)
    assert row["d"] == 16 and row["finite"]
    assert row["peak_rss_mb"] >= row["baseline_rss_mb"] > 0
    vae = common.sd_layout_vae(seed=0)
    sf = float(vae.config.scaling_factor)
    z = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    jac = torch.autograd.functional.jacobian(lambda x: vae.decode(x[None] / sf).sample[0], z[0])
    exact = torch.linalg.svdvals(jac.reshape(-1, 16).double()).log().sum()
    assert row["log_volume"][0] == pytest.approx(float(exact), rel=1e-4)


def test_performance_table_flags_missed_targets():
    def results(speedup: float) -> dict:
        return {"geometry": {"demo": {
            "n_samples": 2, "speedup_vs_reference": speedup, "speedup_vs_reference_cpu_time": speedup,
            "ours_s_per_sample": 1.0, "reference_s_per_sample": speedup, "max_abs_err_influence": 0.0,
            "reference_max_abs_err_influence": 0.5, "rel_err_log_volume": 0.0, "reference_rel_err_log_volume": 0.1,
        }}}

    first = run_all.performance_rows(results(25.0))[0]
    assert first[-1] == "yes" and first[-2] == ">= 20.0"
    assert run_all.performance_rows(results(10.0))[0][-1] == "NO"


def test_geometry_paths_bench_counts_products_and_checks_against_the_oracle(tiny_decoder):
    """bench_geometry_paths building blocks on the tiny decoder: the counted products of each path
    match the cost model, the reverse-mode oracle matches the finite-difference Jacobian, the
    floor uses a positive per-product cost, and the report renders."""
    from benchmarks import bench_geometry_paths as bgp

    decode, z, fd_jac = tiny_decoder
    jac = bgp.oracle_jacobians(decode, z, chunk=16)
    assert torch.allclose(jac, fd_jac, atol=1e-4, rtol=1e-3)
    d = int(z[0].numel())
    s, g, counts = bgp.timed_geometry(decode, z, 1, **bgp._kw(k=8, influence="exact", log_volume_method="exact"))
    assert counts == {"jvp": d, "vjp": 0} and s > 0
    exact_lv = torch.linalg.svdvals(jac)[:, :8].log().sum(1)
    assert torch.allclose(g.log_volume.double(), exact_lv, rtol=1e-4)
    _, g2, c2 = bgp.timed_geometry(decode, z, 1, **bgp._kw(kind="logdet", log_volume_method="slq", slq_probes=2,
                                                            slq_steps=3))
    assert c2 == geometry.log_volume_products("slq", d=d, k=8, slq_probes=2, slq_steps=3)
    assert bgp.product_cost(decode, z[:1], "gram", 4, repeats=1, warmup=1) > 0
    assert bgp.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    row = {"path": "exact", "products": counts, "floor_s": 1.0, "s_per_sample": s, "ratio_to_floor": s,
           "loadavg": [0.0, 0.0, 0.0], "rel_err_log_volume": 0.0}
    text = bgp.markdown({"paths": {"d": d, "pixels": 1, "samples": 2, "threads": 1, "loadavg_before": [0, 0, 0],
                                   "product_seconds": {"jvp@4": 1e-3}, "rows": [row]}})
    assert "| exact" in text


def test_scaling_worker_paths_mode_extrapolates_from_the_products_it_ran():
    row = scaling_worker.measure_path(latent_size=2, path="logdet", full=False, seed=0)
    assert row["products_run"] == geometry.SLQ_PROBES * 2  # 2 Lanczos steps
    assert row["products_per_sample"] == geometry.SLQ_PROBES * min(geometry.SLQ_STEPS, 16)
    assert row["s_per_sample"] == pytest.approx(row["s_per_product"] * row["products_per_sample"])
    assert row["peak_rss_mb"] >= row["baseline_rss_mb"] > 0


def test_blind_bench_cross_fits_like_the_evaluation_layer(tmp_path):
    """bench_blind's logistic cross-fitting is the evaluation layer's (same out-of-fold scores);
    its gradient boosting is out of fold too (shuffling one fold's labels leaves that fold's scores
    unchanged), and its AUROC is sklearn's."""
    from PIL import Image

    from benchmarks import bench_blind
    from ldminv_core.data.blind_features import blind_features
    from ldminv_core.evaluation.blind import cross_fitted_blind_scores
    from ldminv_core.evaluation.evaluator import stratified_folds

    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        pixels = np.clip(rng.normal(110 + 25 * (i < 20), 30, size=(16, 16)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"img_{i:02d}.png")
        Image.fromarray(pixels, mode="L").save(paths[-1])
    labels = np.r_[np.ones(20, dtype=np.int64), np.zeros(20, dtype=np.int64)]
    feats = blind_features(paths, captions=[f"a {'bright' if i < 20 else 'dark'} square" for i in range(40)])
    folds = stratified_folds(labels, folds=5, seed=0)
    ours, seconds = bench_blind.cross_fit(feats, labels, folds, "logistic")
    theirs = cross_fitted_blind_scores(feats, labels, folds)
    assert ours.keys() == theirs.scores.keys() == seconds.keys()
    for g in ours:
        np.testing.assert_allclose(ours[g], theirs.scores[g], rtol=0, atol=1e-12)
    hgb, _ = bench_blind.cross_fit(feats, labels, folds, "hist_gradient_boosting")
    shuffled = labels.copy()
    own = folds == 0
    shuffled[own] = shuffled[own][::-1]
    again, _ = bench_blind.cross_fit(feats, shuffled, folds, "hist_gradient_boosting")
    for g in hgb:
        assert np.all((hgb[g] >= 0) & (hgb[g] <= 1))
        np.testing.assert_array_equal(hgb[g][own], again[g][own])
    auroc, lo, hi = bench_blind.auroc_interval(ours["all"], labels, folds, n_boot=200)
    assert auroc == pytest.approx(roc_auc_score(labels, ours["all"]), abs=1e-12) and lo <= auroc <= hi


def test_blind_bench_null_study_reports_the_tools_verdict(tmp_path):
    """bench_blind's null study: each draw's plain interval is the percentile interval of sklearn's
    AUROC over the standard design's replicates of the fixed out-of-fold scores, its reported
    verdict and interval are evaluate_blind's (standard design, honest folds), the reported
    interval contains the plain one, the counts are the draws' verdicts and their intervals
    scipy's exact binomial ones; gradient boosting gets the plain interval only."""
    from PIL import Image
    from scipy.stats import beta, binomtest, rankdata

    from benchmarks import bench_blind
    from ldminv_core.data.blind_features import BlindFeatures, blind_features
    from ldminv_core.evaluation import combine_strata, make_protocol, resample_index
    from ldminv_core.evaluation.blind import cross_fitted_blind_scores, evaluate_blind
    from ldminv_core.evaluation.evaluator import stratified_folds

    rng = np.random.default_rng(1)
    paths = []
    for i in range(40):  # one distribution: every supported / contradicted verdict is a false alarm
        pixels = np.clip(rng.normal(120, 30, size=(16, 16)), 0, 255).astype(np.uint8)
        paths.append(tmp_path / f"img_{i:02d}.png")
        Image.fromarray(pixels, mode="L").save(paths[-1])
    pool = blind_features(paths, captions=[f"a square number {i % 3}" for i in range(40)])
    n, draws = 10, 2
    res = bench_blind.null_rate(sizes=(n,), repeats={n: draws}, pool=pool, log=lambda _: None)
    assert res["pool"] == 40
    per = res["sizes"][str(n)]
    assert "reported" in per["logistic"] and "reported" not in per["hist_gradient_boosting"]
    labels = np.r_[np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]
    folds = stratified_folds(labels, folds=5, seed=0)
    design = resample_index(combine_strata(labels), n_boot=1000, seed=0)
    for r, d in enumerate(per["logistic"]["per_draw"]):
        pick = np.random.default_rng(1000 + r).permutation(40)[: 2 * n]
        sub = BlindFeatures(groups={g: x[pick] for g, x in pool.groups.items()}, names=pool.names,
                            captions=tuple(np.asarray(pool.captions, dtype=object)[pick]))
        score = cross_fitted_blind_scores(sub, labels, folds).scores["all"]
        assert d["auroc"] == pytest.approx(roc_auc_score(labels, score), abs=1e-12)
        assert (labels[design[:, :n]] == 1).all() and (labels[design[:, n:]] == 0).all()  # columns keep their split
        ranks = rankdata(score[design], axis=1)  # the Mann-Whitney AUROC of every replicate
        reps = (ranks[:, :n].sum(axis=1) - n * (n + 1) / 2) / (n * n)
        for b in range(5):
            assert roc_auc_score(labels[design[b]], score[design[b]]) == pytest.approx(reps[b], abs=1e-12)
        np.testing.assert_allclose(d["plain_ci"], np.percentile(reps, [2.5, 97.5]), rtol=0, atol=1e-9)
        tool = evaluate_blind(sub, labels, folds, make_protocol("standard"), design).group("all")
        assert d["reported_verdict"] == tool.verdict
        np.testing.assert_allclose(d["reported_ci"], tool.ci["auroc"], rtol=0, atol=1e-12)
        assert d["reported_ci"][0] <= d["plain_ci"][0] and d["reported_ci"][1] >= d["plain_ci"][1]
        assert d["fitting_permutations"] == 40
    for clf, entry in per.items():
        for kind in ("plain", "reported") if clf == "logistic" else ("plain",):
            verdicts = [d[f"{kind}_verdict"] for d in entry["per_draw"]]
            for key, count in (("supported", verdicts.count("supported")),
                               ("contradicted", verdicts.count("contradicted")),
                               ("false_alarm", verdicts.count("supported") + verdicts.count("contradicted"))):
                got = entry[kind][key]
                ci = binomtest(count, draws).proportion_ci(confidence_level=0.95, method="exact")
                assert (got["count"], got["draws"]) == (count, draws)
                np.testing.assert_allclose(got["ci"], [ci.low, ci.high], rtol=0, atol=1e-12)
    six = bench_blind.rate(6, 80)  # Clopper-Pearson from the beta quantiles
    assert six["rate"] == 0.075
    np.testing.assert_allclose(six["ci"], [beta.ppf(0.025, 6, 75), beta.ppf(0.975, 7, 74)], rtol=1e-9)


_PAPER_PULLBACK = '''
import torchvision  # the paper's files import torchvision: never executed here
from torchvision import transforms
import argparse
raise RuntimeError("the module body ran")


def topk_singular_values_power(J, k=8, n_iter=10):
    return torch.linalg.svdvals(J.double())[:k]


def compute_log_volume_per_sample_decoder(decoder, z_tensor, device, max_samples=None, k=8, n_iter=10, desc=""):
    decoder = decoder.to(device).eval()
    out = []
    for i in tqdm(range(z_tensor.shape[0]), desc=desc):
        z = z_tensor[i:i + 1].detach().clone().requires_grad_(True)
        J = jacobian(lambda x: decoder.decode(x).view(-1), z).reshape(-1, z.numel())
        out.append(float(torch.log(topk_singular_values_power(J, k=k, n_iter=n_iter)).sum()))
    return np.array(out, dtype=np.float64)


def not_kept():
    raise RuntimeError("not a kept function")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=8, help="Top-k singular values to use")
    p.add_argument("--n-iter", type=int, default=10, help="Power iteration rounds")
'''

_PAPER_PER_DIM = '''
from torchvision.datasets import MNIST


def compute_per_dim_contrib_decoder(decoder: VAE, z_tensor, device, n_mc=8, eps=1e-12, desc=""):
    decoder = decoder.to(device).eval()
    rows = []
    for i in tqdm(range(z_tensor.shape[0]), desc=desc):
        z = z_tensor[i:i + 1].detach()
        J = jacobian(lambda x: decoder.decode(x).view(-1), z).reshape(-1, z.numel()).double()
        rows.append(0.5 * torch.log(J.square().sum(0) + eps))
    return torch.stack(rows).numpy()


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--n-mc", type=int, default=8, help="MC samples for diag(J^T J) estimation")
'''


def _paper_repo(root, *, per_dim=_PAPER_PER_DIM):
    (root / "ldm_light").mkdir(parents=True)
    (root / "ldm_light" / "cal_pullback.py").write_text(_PAPER_PULLBACK)
    (root / "ldm_light" / "cal_per_dim_contri.py").write_text(per_dim)
    return root


def test_paper_bench_loads_only_the_functions_and_scores_all_arms_on_one_oracle(tmp_path):
    """A synthetic "paper" checkout whose module bodies would fail (torchvision, a raise): the
    loader runs only the kept functions; they compute the exact top-k log-volume and influence
    through the wrapper, so an error ~0 shows the wrapper differentiates the project's map."""
    import sys
    from types import SimpleNamespace

    from benchmarks import bench_paper_geometry as bpg
    from ldminv_core.geometry.tangents import VaeDecoder

    repo = _paper_repo(tmp_path / "paper")
    fns = bpg.load_paper_functions(repo)
    assert fns.defaults == {"k": 8, "n_iter": 10, "n_mc": 8}
    assert fns.source == {"ldm_light/cal_pullback.py": ["topk_singular_values_power",
                                                        "compute_log_volume_per_sample_decoder"],
                          "ldm_light/cal_per_dim_contri.py": ["compute_per_dim_contrib_decoder"]}
    assert "torchvision" not in sys.modules
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=8, scaling_factor=SF,
    ).eval().requires_grad_(False)
    decode = VaeDecoder(vae, scaling_factor=SF)
    z = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    model = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    doc = bpg.run_paper_geometry(model, decode, z, paper_repo=repo, rounds=1, reference_iters=3,
                                 reference_probes=2, batch_size=2, log=lambda _: None)
    assert "torchvision" not in sys.modules
    assert set(doc["arms"]) == {"analyze", "paper", "reference"}
    assert doc["paper"]["k"] == doc["analyze"]["topk"] == 50 and doc["paper"]["n_mc"] == 8
    # oracle: float64 SVD / column norms of the autograd Jacobian of the same decoder
    jac = torch.stack([torch.autograd.functional.jacobian(lambda x: decode(x[None])[0], z1).reshape(-1, 64)
                       for z1 in z]).double()
    exact_lv, _ = exact_geometry(jac, (4, 4, 4), k=50)
    assert doc["exact_log_volume_range"] == pytest.approx([float(exact_lv.min()), float(exact_lv.max())], rel=1e-5)
    for arm in ("analyze", "paper"):
        row = doc["arms"][arm]
        assert row["rel_err_log_volume"] < 1e-4 and row["max_abs_err_influence"] < 1e-3, (arm, row)
        assert len(row["runs"]) == (2 if arm == "analyze" else 1)
        assert all(r["s"] > 0 and len(r["load_before"]) == 3 for r in row["runs"])
    assert doc["arms"]["reference"]["max_abs_err_influence"] > 1e-3  # 2 Hutchinson probes: visibly noisy
    assert doc["speedup_vs_paper"] == pytest.approx(
        doc["arms"]["paper"]["s_per_sample"] / doc["arms"]["analyze"]["s_per_sample"])
    lines = bpg.table(doc).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(bpg.TABLE_HEADER)
    assert len(lines) == 5


def test_paper_bench_skips_the_paper_arm_without_a_checkout_and_names_what_is_missing(tmp_path):
    from types import SimpleNamespace

    from benchmarks import bench_paper_geometry as bpg
    from ldminv_core.geometry.tangents import VaeDecoder

    with pytest.raises(bpg.PaperFunctionError, match="compute_per_dim_contrib_decoder"):
        bpg.load_paper_functions(_paper_repo(tmp_path / "broken", per_dim="def other():\n    pass\n"))
    with pytest.raises(bpg.PaperFunctionError, match="cal_pullback.py"):
        bpg.load_paper_functions(tmp_path / "nothing")
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(4,),
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1, norm_num_groups=4, sample_size=4, scaling_factor=SF,
    ).eval().requires_grad_(False)
    doc = bpg.run_paper_geometry(SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32),
                                 VaeDecoder(vae, scaling_factor=SF), torch.randn(1, 4, 4, 4), paper_repo=None,
                                 rounds=1, reference_iters=2, reference_probes=1, log=lambda _: None)
    assert set(doc["arms"]) == {"analyze", "reference"} and doc["speedup_vs_paper"] is None
    assert "skipped" in doc["paper"] and "skipped" in bpg.table(doc)
