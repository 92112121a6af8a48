"""Decoder geometry against an oracle Jacobian from torch.autograd.functional.jacobian.

The decoders are tiny random diffusers AutoencoderKL models with their default attention
mid-block, at two latent shapes (square and non-square, 1 and 3 image channels).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from ldminv_core import geometry as geo
from ldminv_core.geometry.tangents import VaeDecoder
from ldminv_core.errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError

SCALING = 0.7


def _vae(image_channels: int, latent_channels: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        latent_channels=latent_channels,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=8,
        scaling_factor=SCALING,
    ).eval()
    assert vae.config.mid_block_add_attention  # the attention mid-block is part of the test
    return vae


# (image channels, latent shape (C, h, w))
CASES = {
    "gray-4x4x4": (1, (4, 4, 4)),
    "rgb-3x3x5": (3, (3, 3, 5)),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    image_channels, latent_shape = CASES[request.param]
    vae = _vae(image_channels, latent_shape[0], seed=len(request.param))

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z / SCALING).sample

    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, *latent_shape, generator=gen)
    d = int(np.prod(latent_shape))
    oracle = []
    for i in range(z.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda x: decode(x[None])[0], z[i])
        oracle.append(jac.reshape(-1, d).to(torch.float64))
    jac = torch.stack(oracle)  # (N, P, d)
    return {"decode": decode, "z": z, "d": d, "jac": jac, "latent_shape": latent_shape}


def _oracle_log_volume(jac: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.svdvals(jac)[:, :k].log().sum(1)


def _oracle_influence(jac: torch.Tensor, shape) -> torch.Tensor:
    return (0.5 * torch.log(jac.square().sum(1) + 1e-12)).reshape(jac.shape[0], *shape)


def _rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((value.double() - ref) / ref.abs()).abs().max())


@pytest.mark.slow
def test_jacobian_matches_autograd(case):
    jac = geo.jacobian(case["decode"], case["z"], chunk_size=7)
    assert jac.shape == case["jac"].shape
    assert torch.allclose(jac.double(), case["jac"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k_kind", ["k<d", "k=d", "k>d"])
@pytest.mark.slow
def test_log_volume_exact(case, k_kind):
    d = case["d"]
    k = {"k<d": d // 3, "k=d": d, "k>d": d + 50}[k_kind]
    ref = _oracle_log_volume(case["jac"], k)
    assert ref.abs().min() > 0.1  # relative error is meaningful
    lv = geo.log_volume(case["decode"], case["z"], k=k, method="exact", chunk_size=16)
    assert lv.shape == (3,) and lv.dtype == torch.float32
    assert _rel_err(lv, ref) <= 1e-4


def test_log_volume_full_rank_is_half_logdet(case):
    jac = case["jac"]
    half_logdet = 0.5 * torch.linalg.slogdet(jac.transpose(1, 2) @ jac).logabsdet
    lv = geo.log_volume(case["decode"], case["z"], k=case["d"], method="exact")
    assert _rel_err(lv, half_logdet) <= 1e-4


@pytest.mark.slow
def test_log_volume_matrix_free_tolerance(case):
    """The matrix-free path: relative error <= 1e-3 with default settings (stated tolerance)."""
    k = case["d"] // 4
    ref = _oracle_log_volume(case["jac"], k)
    lv = geo.log_volume(case["decode"], case["z"], k=k, method="matrix_free", chunk_size=32)
    assert _rel_err(lv, ref) <= 1e-3
    # Ritz values are lower bounds of the true singular values.
    assert bool((lv.double() <= ref + 1e-4 * ref.abs()).all())
    # More power iterations never make it worse, and zero iterations is visibly worse.
    rough = geo.log_volume(case["decode"], case["z"], k=k, method="matrix_free", iters=0)
    assert _rel_err(rough, ref) > _rel_err(lv, ref)


@pytest.mark.slow
def test_influence_exact(case):
    ref = _oracle_influence(case["jac"], case["latent_shape"])
    infl = geo.dim_influence(case["decode"], case["z"], method="exact", chunk_size=5)
    assert infl.shape == (3, *case["latent_shape"]) and infl.dtype == torch.float32
    assert float((infl.double() - ref).abs().max()) <= 1e-4


@pytest.mark.slow
def test_hutchinson_converges_to_exact(case):
    ref = _oracle_influence(case["jac"], case["latent_shape"])
    errs = {}
    for probes in (16, 2048):
        est = geo.dim_influence(case["decode"], case["z"], method="hutchinson", probes=probes, seed=3)
        errs[probes] = float((est.double() - ref).abs().mean())
    assert errs[2048] < errs[16] / 3
    # Relative std of a G_ii estimate is sqrt(2 / probes); in 0.5*log units about half that.
    assert errs[2048] < 0.5 * np.sqrt(2 / 2048) * 1.5


def test_geometry_shares_results_with_single_calls(case):
    g = geo.decoder_geometry(case["decode"], case["z"], k=10, influence="exact", chunk_size=64)
    assert g.log_volume_method == "exact" and g.influence_method == "exact"
    assert torch.allclose(g.log_volume, geo.log_volume(case["decode"], case["z"], k=10, method="exact"))
    assert torch.allclose(g.influence, geo.dim_influence(case["decode"], case["z"], method="exact"), atol=1e-6)


@pytest.mark.slow
def test_random_paths_do_not_depend_on_batch_split(case):
    z, dec = case["z"], case["decode"]
    whole = geo.dim_influence(dec, z, method="hutchinson", probes=8, seed=5, chunk_size=64)
    part = geo.dim_influence(dec, z[2:], method="hutchinson", probes=8, seed=5, sample_ids=[2], chunk_size=3)
    assert torch.allclose(whole[2:], part, atol=1e-6)
    k = case["d"] // 4
    lv_whole = geo.log_volume(dec, z, k=k, method="matrix_free", seed=2)
    lv_part = geo.log_volume(dec, z[1:2], k=k, method="matrix_free", seed=2, sample_ids=[1], chunk_size=5)
    assert torch.allclose(lv_whole[1:2], lv_part, rtol=1e-5)


def test_auto_method_choices():
    assert geo.resolve_influence_method("auto", 256) == "exact"
    assert geo.resolve_influence_method("auto", 16384) == "hutchinson"
    assert geo.resolve_log_volume_method("auto", d=256, p=1024, k=50) == "exact"
    assert geo.resolve_log_volume_method("auto", d=16384, p=3 * 512 * 512, k=20) == "matrix_free"
    assert geo.resolve_log_volume_method("auto", d=64, p=10**9, k=64) == "exact"


def test_influence_maps():
    gen = torch.Generator().manual_seed(0)
    infl = torch.randn(2, 3, 4, 5, generator=gen)
    g = torch.exp(2 * infl.double())
    total = geo.influence_map(infl, reduce="total")
    assert torch.allclose(total.double(), 0.5 * torch.log(g.sum(1)), atol=1e-5)
    assert torch.allclose(geo.influence_map(infl, reduce="mean"), infl.mean(1))
    assert torch.allclose(geo.influence_map(infl, reduce="max"), infl.amax(1))
    heat = geo.influence_heatmap(infl.numpy(), size=(8, 10))
    assert isinstance(heat, np.ndarray) and heat.shape == (2, 8, 10)
    per_channel = geo.influence_heatmap(infl[0], size=(8, 10), reduce=None)
    assert per_channel.shape == (3, 8, 10)
    # bilinear upsampling keeps values within the range of the map
    assert heat.max() <= float(infl.mean(1).max()) + 1e-6


def test_errors(case):
    dec, z = case["decode"], case["z"]
    wrong_channels = torch.randn(2, z.shape[1] + 1, *z.shape[2:])
    with pytest.raises(ShapeError, match="decode"):
        geo.log_volume(dec, wrong_channels, k=4)
    with pytest.raises(ShapeError, match=r"\(N, C, h, w\)"):
        geo.dim_influence(dec, z[0])
    bad = z.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"samples \[1\]"):
        geo.log_volume(dec, bad, k=4)
    bad[1, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        geo.dim_influence(dec, bad)
    for k in (0, -3):
        with pytest.raises(LdminvError, match="k: expected an integer >= 1"):
            geo.log_volume(dec, z, k=k)
    with pytest.raises(UnknownNameError, match="method"):
        geo.log_volume(dec, z, k=4, method="lanczos-ish")
    with pytest.raises(UnknownNameError, match="hutchinson"):
        geo.dim_influence(dec, z, method="sketch")
    with pytest.raises(EmptyInputError):
        geo.log_volume(dec, z[:0], k=4)
    with pytest.raises(LdminvError, match="probes"):
        geo.dim_influence(dec, z, method="hutchinson", probes=0)
    with pytest.raises(ShapeError, match="sample_ids"):
        geo.dim_influence(dec, z, sample_ids=[0])


def _autograd_jacobians(decode, z: torch.Tensor) -> torch.Tensor:
    d = int(np.prod(z.shape[1:]))
    return torch.stack([torch.autograd.functional.jacobian(lambda x: decode(x[None])[0], z[i]).reshape(-1, d)
                        for i in range(z.shape[0])]).double()


@pytest.mark.slow
def test_auto_log_volume_shares_the_exact_influence_jacobian():
    """With the exact influence, "auto" takes the exact log-volume from the same Jacobian even where
    the block Krylov alone would need fewer products (d = 256 > 2 x 88), and it matches the
    autograd oracle; without the exact influence, the same d goes matrix-free."""
    vae = _vae(1, 4, seed=7)
    decode = lambda z: vae.decode(z / SCALING).sample  # noqa: E731
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    d, k = 256, 2
    p = int(np.prod(decode(z[:1]).shape[1:]))  # 1 x 32 x 32 pixels
    assert geo.resolve_log_volume_method("auto", d=d, p=p, k=k) == "matrix_free"
    assert geo.resolve_log_volume_method("auto", d=d, p=p, k=k, influence_method="exact") == "exact"
    out = geo.decoder_geometry(decode, z, k=k, influence="exact", log_volume_method="auto")
    assert (out.influence_method, out.log_volume_method) == ("exact", "exact")
    assert torch.equal(out.log_volume_error, torch.zeros(2, dtype=torch.float64))
    jac = _autograd_jacobians(decode, z)
    assert _rel_err(out.log_volume, _oracle_log_volume(jac, k)) < 1e-4
    assert _rel_err(out.influence, _oracle_influence(jac, (4, 8, 8))) < 1e-4
    hutch = geo.decoder_geometry(decode, z, k=k, influence="hutchinson", log_volume_method="auto", probes=4)
    assert hutch.log_volume_method == "matrix_free"


# ----------------------------------------------------------------------------- matrix-free top-k


@pytest.fixture(scope="module")
def wide_decoder():
    """RGB decoder of block_out_channels (32, 64) with its attention mid-block (the benchmark's
    4x16x16 -> 3x32x32 decoder), on a 4x8x8 latent (d = 256, 3x16x16 images) to keep the autograd
    oracle fast."""
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16).eval()
    assert vae.config.mid_block_add_attention
    decode = lambda z: vae.decode(z).sample  # noqa: E731
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return decode, z, _autograd_jacobians(decode, z)


@pytest.mark.parametrize("k", [10, 50])
@pytest.mark.slow
def test_matrix_free_meets_its_residual_bound_and_stated_tolerance(wide_decoder, k):
    """Adaptive block Krylov: relative error <= MATRIX_FREE_TOL against the SVD of the autograd
    Jacobian; the estimate is a lower bound and the reported residual bound covers the error."""
    decode, z, jac = wide_decoder
    ref = _oracle_log_volume(jac, k)
    g = geo.decoder_geometry(decode, z, k=k, influence="hutchinson", probes=1, log_volume_method="matrix_free")
    assert g.log_volume_method == "matrix_free" and g.log_volume_error.shape == (2,)
    lv = g.log_volume.double()
    assert _rel_err(lv, ref) <= geo.MATRIX_FREE_TOL
    assert bool((lv <= ref + 1e-5 * ref.abs()).all())  # Ritz values are lower bounds
    assert bool((ref - lv <= g.log_volume_error + 1e-5 * ref.abs()).all())  # the bound holds
    assert bool((g.log_volume_error <= geo.MATRIX_FREE_TOL * ref.abs().clamp_min(1.0)).all())
    # a fixed single Krylov block after the start is visibly worse
    rough = geo.log_volume(decode, z, k=k, method="matrix_free", iters=1)
    assert _rel_err(rough, ref) > _rel_err(lv, ref)


# ----------------------------------------------------------------------------- SLQ log-det


@pytest.fixture(scope="module", params=["tiny_vae-4x6x6", "rgb-3x6x6"])
def logdet_case(request):
    from tiny_models import tiny_vae  # tests/ is on sys.path (conftest.py)

    if request.param == "tiny_vae-4x6x6":  # tiny_vae is convolutional: a 4x6x6 latent decodes to 24x24
        vae = tiny_vae(seed=0)
        sf = vae.config.scaling_factor
        decode = lambda z: vae.decode(z / sf).sample  # noqa: E731
        shape = (4, 6, 6)
    else:
        vae = _vae(3, 3, seed=3)
        decode = lambda z: vae.decode(z / SCALING).sample  # noqa: E731
        shape = (3, 6, 6)
    z = torch.randn(2, *shape, generator=torch.Generator().manual_seed(2))
    jac = _autograd_jacobians(decode, z)
    # one slogdet per sample (batched LU of some MKL builds is unreliable)
    ref = torch.stack([0.5 * torch.linalg.slogdet(j.T @ j).logabsdet for j in jac])
    assert ref.abs().min() > 10  # relative error is meaningful
    return decode, z, ref


@pytest.mark.slow
def test_slq_logdet_matches_slogdet(logdet_case):
    decode, z, ref = logdet_case
    g = geo.decoder_geometry(decode, z, log_volume="logdet", log_volume_method="slq", influence="hutchinson", probes=1)
    assert (g.log_volume_kind, g.log_volume_method) == ("logdet", "slq")
    assert g.log_volume.shape == (2,) and g.log_volume.dtype == torch.float32
    err = _rel_err(g.log_volume, ref)
    print(f"SLQ rel err {err:.4f}, se/|ref| {(g.log_volume_error / ref.abs()).tolist()}")
    assert err <= geo.SLQ_RTOL
    se = g.log_volume_error
    assert se.dtype == torch.float64 and bool((se > 0).all()) and bool((se < 0.05 * ref.abs()).all())
    exact = geo.decoder_geometry(decode, z, log_volume="logdet", log_volume_method="exact", influence="exact")
    assert exact.log_volume_method == "exact" and _rel_err(exact.log_volume, ref) <= 1e-5
    assert torch.equal(exact.log_volume_error, torch.zeros(2, dtype=torch.float64))
    # "auto" takes the exact path here (the Jacobian fits and d JVPs < the SLQ's products)
    assert geo.log_volume(decode, z, kind="logdet").allclose(exact.log_volume)


@pytest.mark.slow
def test_slq_is_reproducible_per_sample_id_and_split_independent(logdet_case):
    decode, z, _ = logdet_case
    opts = dict(kind="logdet", method="slq", slq_probes=3, slq_steps=6, seed=4)
    whole = geo.log_volume(decode, z, chunk_size=64, **opts)
    again = geo.log_volume(decode, z, chunk_size=64, **opts)
    part = geo.log_volume(decode, z[1:], sample_ids=[1], chunk_size=5, **opts)
    assert torch.equal(whole, again)
    assert torch.allclose(whole[1:], part, rtol=1e-5)
    other_seed = geo.log_volume(decode, z, chunk_size=64, **{**opts, "seed": 5})
    assert not torch.allclose(whole, other_seed)


def test_lanczos_quadrature_is_exact_on_a_full_krylov_space():
    from ldminv_core.geometry import slq

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 12, 12, generator=gen, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(12, dtype=torch.float64)
    e, u = torch.linalg.eigh(spd)
    logm = (u * e.log()[:, None, :]) @ u.transpose(1, 2)
    v = slq.rademacher((3, 12), generator=gen)
    forms = slq.slq_log_quadratic_forms(lambda x: torch.einsum("bij,bj->bi", spd, x), v, 20)  # 20 > d: breakdown
    assert torch.allclose(forms, torch.einsum("bi,bij,bj->b", v, logm, v), rtol=1e-8, atol=1e-8)


# ----------------------------------------------------------------------------- cost model


@pytest.mark.slow
def test_plan_geometry_counts_the_products_it_runs(wide_decoder):
    decode, z, _ = wide_decoder
    plan = geo.plan_geometry(decode, z, k=10, log_volume="logdet", slq_probes=2, slq_steps=3)
    assert plan.log_volume_kind == "logdet" and plan.log_volume_method in ("exact", "slq")
    assert plan.jvp_seconds > 0 and plan.vjp_seconds > 0 and plan.predicted_seconds_per_sample > 0
    # the measured cheapest, or (CHOICE_MARGIN: timing noise must not flip the choice) the
    # candidate with the fewest products when it is predicted within the margin of it
    best = min(c["predicted_seconds_per_sample"] for c in plan.candidates)
    chosen = next(c for c in plan.candidates
                  if (c["influence_method"], c["log_volume_method"]) == (plan.influence_method, plan.log_volume_method))
    assert plan.predicted_seconds_per_sample == chosen["predicted_seconds_per_sample"]
    if plan.predicted_seconds_per_sample != best:
        from ldminv_core.geometry.plan import CHOICE_MARGIN

        fewest = min(c["products"]["jvp"] + c["products"]["vjp"] for c in plan.candidates)
        assert chosen["products"]["jvp"] + chosen["products"]["vjp"] == fewest
        assert plan.predicted_seconds_per_sample <= CHOICE_MARGIN * best
    import json

    json.dumps(plan.as_dict())
    # SLQ at 2 probes x 3 steps (12 products) is cheaper than d = 256 JVPs unless the exact
    # influence builds the Jacobian anyway; the counts match what the run does
    forced = geo.plan_geometry(decode, z, influence="hutchinson", probes=5, log_volume="logdet", slq_probes=2,
                               slq_steps=3, measure=False)
    assert (forced.influence_method, forced.log_volume_method) == ("hutchinson", "slq")
    assert forced.products == {"jvp": 6, "vjp": 6 + 5}
    counts: dict = {}
    g = geo._geometry(decode, z[:1], k=forced.k, influence="hutchinson", log_volume_method="slq", kind="logdet",
                      probes=5, slq_probes=2, slq_steps=3, seed=0, sample_ids=None, chunk_size=None,
                      oversample=None, iters=None, progress=None, counts=counts)
    assert counts == forced.products and g.log_volume_method == "slq"
    out = geo.decoder_geometry(decode, z[:1], plan=forced)
    assert torch.allclose(out.log_volume, g.log_volume)
    exact = geo.plan_geometry(decode, z, influence="exact", k=10, measure=False)
    assert exact.log_volume_method == "exact" and exact.products == {"jvp": 256, "vjp": 0}


def test_new_argument_errors(logdet_case):
    decode, z, _ = logdet_case
    with pytest.raises(UnknownNameError, match="log_volume"):
        geo.decoder_geometry(decode, z, log_volume="volume")
    with pytest.raises(UnknownNameError, match="slq"):
        geo.log_volume(decode, z, method="slq")  # kind="topk"
    with pytest.raises(LdminvError, match="slq_probes"):
        geo.log_volume(decode, z, kind="logdet", method="slq", slq_probes=0)
    with pytest.raises(LdminvError, match="slq_steps"):
        geo.decoder_geometry(decode, z, log_volume="logdet", slq_steps=-1)
    with pytest.raises(LdminvError, match="iters"):
        geo.log_volume(decode, z, k=3, method="matrix_free", iters=-1)


# ----------------------------------------------------------------------------- issue checks (d = 1024)


@pytest.fixture(scope="module")
def d1024_decoder():
    """A thin RGB decoder on the benchmark's shapes: 4x16x16 latent (d = 1024) -> 3x32x32 image
    (attention mid-block), one latent, and its oracle Jacobian by torch.autograd.functional.jacobian
    (reverse mode, one backward pass per pixel: independent of the library's forward-mode path)."""
    vae = _vae(3, 4, seed=11)
    decode = VaeDecoder(vae, scaling_factor=SCALING)  # the layer-by-layer products, as analyze runs
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    assert decode(z).shape == (1, 3, 32, 32)
    return decode, z, _autograd_jacobians(decode, z)


@pytest.mark.slow
def test_matrix_free_top10_at_d1024_meets_tolerance(d1024_decoder):
    """Issue check: adaptive block Krylov, k = 10, d = 1024: relative error <= 1e-3 against the
    oracle SVD, the reported residual bound meets the tolerance and covers the error."""
    decode, z, jac = d1024_decoder
    ref = _oracle_log_volume(jac, 10)
    g = geo.decoder_geometry(decode, z, k=10, influence="hutchinson", probes=1, log_volume_method="matrix_free")
    err = _rel_err(g.log_volume, ref)
    assert err <= geo.MATRIX_FREE_TOL
    assert float(g.log_volume_error[0]) <= geo.MATRIX_FREE_TOL * max(1.0, float(ref.abs()[0]))
    assert float(ref[0] - g.log_volume.double()[0]) <= float(g.log_volume_error[0]) + 1e-5 * float(ref.abs()[0])


@pytest.mark.slow
def test_auto_paths_meet_their_stated_tolerance_against_the_oracle(d1024_decoder):
    """Whatever "auto" picks (plan_geometry, as analyze runs it), top-k and log-det log-volumes
    are within the stated tolerance of the oracle: exact 1e-4, matrix-free MATRIX_FREE_TOL,
    SLQ SLQ_RTOL; and the plan is JSON-ready with a one-line description."""
    import json

    decode, z, jac = d1024_decoder
    tol = {"exact": 1e-4, "matrix_free": geo.MATRIX_FREE_TOL, "slq": geo.SLQ_RTOL}
    logdet = 0.5 * torch.linalg.slogdet(jac[0].T @ jac[0]).logabsdet
    for kind, ref in (("topk", _oracle_log_volume(jac, 50)), ("logdet", logdet.reshape(1))):
        plan = geo.plan_geometry(decode, z, k=50, log_volume=kind)
        g = geo.decoder_geometry(decode, z, plan=plan)
        assert g.log_volume_method == plan.log_volume_method
        assert _rel_err(g.log_volume, ref) <= tol[plan.log_volume_method], plan.describe()
        d = json.loads(json.dumps(plan.as_dict()))
        assert d["predicted_seconds_per_sample"] > 0 and d["description"] == plan.describe()
        assert plan.describe().startswith(f"influence {plan.influence_method}")
        assert plan.engine == "layerwise" and g.engine == "layerwise"
        assert plan.describe().endswith(" s per sample (layer-by-layer products)")
    # without a plan, "auto" resolves by product counts: the exact influence's d JVPs build the
    # Jacobian, so the log-volume is exact too (checked against the oracle above when planned)
    assert geo.resolve_influence_method("auto", 1024) == "exact"
    assert geo.resolve_log_volume_method("auto", d=1024, p=3072, k=50, influence_method="exact") == "exact"


@pytest.mark.slow
def test_measured_plan_keeps_the_fewest_products_unless_clearly_cheaper(d1024_decoder, monkeypatch):
    """Timing noise cannot flip "auto": with measured costs the fewest-products combination stays
    unless another is predicted cheaper by more than CHOICE_MARGIN; the costs are set here."""
    from ldminv_core.geometry import plan as gplan

    decode, z, _ = d1024_decoder
    by_count = geo.plan_geometry(decode, z, k=50, measure=False)
    n_count = sum(by_count.products.values())

    def plan_with(jvp_s: float, vjp_s: float) -> geo.GeometryPlan:
        monkeypatch.setattr(gplan, "_measure", lambda *a, **k: (jvp_s, vjp_s, 0.0, "layerwise"))
        return geo.plan_geometry(decode, z, k=50)

    # VJPs a little dearer than JVPs: some JVP-heavier plan may be cheaper, but not by the margin
    slight = plan_with(1e-3, 1.1e-3)
    assert (slight.influence_method, slight.log_volume_method) == (by_count.influence_method,
                                                                   by_count.log_volume_method)
    # VJPs 20x dearer: the plan without VJPs (exact: d JVPs, one Jacobian) wins by far
    costly_vjp = plan_with(1e-3, 2e-2)
    assert costly_vjp.products["vjp"] == 0 and costly_vjp.influence_method == "exact"
    predicted = {(c["influence_method"], c["log_volume_method"]): c["predicted_seconds_per_sample"]
                 for c in costly_vjp.candidates}
    assert min(predicted.values()) * gplan.CHOICE_MARGIN < predicted[(by_count.influence_method,
                                                                      by_count.log_volume_method)]
    assert by_count.products["vjp"] > 0 and n_count < sum(costly_vjp.products.values())
