"""Geometry benchmarks: ldminv_core.geometry against the reference algorithm, and its scaling.

1. :func:`run_demo_geometry`: on the demo VAE, ``decoder_geometry(decode, z, k=50,
   influence="exact")`` (log-volume from the exact Jacobian + exact influence) against
   :func:`benchmarks.reference_geometry.reference_geometry` on the same latents; wall-time
   ratio and the accuracy of both against the exact values (float64 SVD and column norms of
   the autograd Jacobian).
2. :func:`run_scaling`: the matrix-free path (``log_volume(method="matrix_free", k=20)`` +
   ``dim_influence(method="hutchinson", probes=16)``) on a random SD-layout VAE at growing
   latent sizes, one fresh subprocess per size (peak memory = that process's ru_maxrss),
   with the log-log growth exponents of time and memory.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import torch

from benchmarks import common
from benchmarks.reference_geometry import ReferenceGeometry, exact_geometry, reference_geometry
from ldminv_core import geometry as geo

__all__ = ["run_demo_geometry", "run_scaling", "geometry_errors"]


def geometry_errors(
    log_volume: torch.Tensor, influence: torch.Tensor, exact_lv: torch.Tensor, exact_infl: torch.Tensor
) -> dict[str, float]:
    """Accuracy of a (log_volume (N,), influence (N, C, h, w)) pair against the exact values.

    Returns {"max_abs_err_influence": max |infl - exact| (in 0.5*log G_ii units),
    "rel_err_log_volume": max over samples |lv - exact| / |exact|,
    "max_abs_err_log_volume": max |lv - exact|}.
    """
    lv = log_volume.to(torch.float64)
    infl = influence.to(torch.float64)
    return {
        "max_abs_err_influence": float((infl - exact_infl).abs().max()),
        "rel_err_log_volume": float(((lv - exact_lv).abs() / exact_lv.abs()).max()),
        "max_abs_err_log_volume": float((lv - exact_lv).abs().max()),
    }


def run_demo_geometry(
    model: common.DemoModel,
    *,
    n_samples: int,
    k: int = 50,
    iters: int = 30,
    probes: int = 16,
    chunk_size: int | None = None,
    log: Callable[[str], None] = print,
    compare_torch_func: bool = True,
) -> dict[str, Any]:
    """Time ldminv's exact geometry and the reference algorithm on ``n_samples`` demo latents.

    The machine is shared, so the two are interleaved sample by sample: ldminv on sample i,
    the reference on sample i, ldminv on sample i again (its time is the mean of the two
    runs), which cancels a drift of the load. One untimed ldminv call warms up first.
    Returns a JSON-ready dict; ``speedup_vs_reference`` = total reference time / total
    ldminv time (wall clock); the same ratio of process CPU time is reported as well. With
    ``compare_torch_func`` ldminv's exact path also runs with ``engine="torch.func"`` (its
    products by torch.func instead of the layer-by-layer ones), interleaved the same way.
    """
    z, z_source = common.demo_latents(model, n_samples)
    decode = model.decode
    latent_shape = tuple(z.shape[1:])

    def ours(i: int, engine: str = "auto") -> geo.Geometry:
        return geo.decoder_geometry(decode, z[i : i + 1], k=k, influence="exact", chunk_size=chunk_size,
                                    sample_ids=[i], engine=engine)

    def ref_one(i: int):
        return reference_geometry(decode, z[i : i + 1], k=k, iters=iters, probes=probes, seed=i,
                                  keep_jacobians=True)

    ours(0)  # warm-up
    if compare_torch_func:
        ours(0, "torch.func")
    log(f"  geometry: ldminv exact path vs reference algorithm, {n_samples} samples, interleaved ...")
    t_ours = t_ref = c_ours = c_ref = t_tf = 0.0
    lv, infl, ref_lv, ref_infl, jacs = [], [], [], [], []
    for i in range(n_samples):
        (w1, c1), g = _timed(lambda: ours(i))
        if compare_torch_func:
            (f1, _), _ = _timed(lambda: ours(i, "torch.func"))
        (w_r, c_r), r = _timed(lambda: ref_one(i))
        (w2, c2), _ = _timed(lambda: ours(i))
        if compare_torch_func:
            (f2, _), _ = _timed(lambda: ours(i, "torch.func"))
            t_tf += 0.5 * (f1 + f2)
        t_ours += 0.5 * (w1 + w2)
        c_ours += 0.5 * (c1 + c2)
        t_ref += w_r
        c_ref += c_r
        lv.append(g.log_volume)
        infl.append(g.influence)
        ref_lv.append(r.log_volume)
        ref_infl.append(r.influence)
        jacs.append(r.jacobians)
    g = geo.Geometry(log_volume=torch.cat(lv), influence=torch.cat(infl), log_volume_method=g.log_volume_method,
                     influence_method=g.influence_method, engine=g.engine)
    ref = ReferenceGeometry(log_volume=torch.cat(ref_lv), influence=torch.cat(ref_infl), jacobians=torch.cat(jacs))
    exact_lv, exact_infl = exact_geometry(ref.jacobians, latent_shape, k=k)
    ours_err = geometry_errors(g.log_volume, g.influence, exact_lv, exact_infl)
    ref_err = geometry_errors(ref.log_volume, ref.influence, exact_lv, exact_infl)
    d = int(z[0].numel())
    with torch.no_grad():
        pixels = int(decode(z[:1])[0].numel())
    return {
        "model": model.source,
        "latents": z_source,
        "n_samples": n_samples,
        "latent_shape": list(latent_shape),
        "d": d,
        "pixels": pixels,
        "k": k,
        "ours_method": f"decoder_geometry(k={k}, influence='exact') -> log-volume {g.log_volume_method}, "
        f"influence {g.influence_method}; chunk_size={effective_chunk(chunk_size, pixels)}; {g.engine} products",
        "engine": g.engine,
        "reference_method": f"autograd.functional.jacobian + {iters} QR power iterations on J^T J (k={k}) "
        f"+ {probes} Hutchinson VJPs per sample, sample by sample",
        "ours_s": t_ours,
        "ours_s_per_sample": t_ours / n_samples,
        "reference_s": t_ref,
        "reference_s_per_sample": t_ref / n_samples,
        "speedup_vs_reference": t_ref / t_ours,
        "ours_cpu_s_per_sample": c_ours / n_samples,
        "reference_cpu_s_per_sample": c_ref / n_samples,
        "speedup_vs_reference_cpu_time": c_ref / c_ours,
        **({"torch_func_s_per_sample": t_tf / n_samples, "torch_func_speedup_vs_reference": t_ref / t_tf,
            "layerwise_speedup_vs_torch_func": t_tf / t_ours} if compare_torch_func else {}),
        **ours_err,
        "reference_max_abs_err_influence": ref_err["max_abs_err_influence"],
        "reference_rel_err_log_volume": ref_err["rel_err_log_volume"],
        "reference_max_abs_err_log_volume": ref_err["max_abs_err_log_volume"],
        "exact_log_volume_range": [float(exact_lv.min()), float(exact_lv.max())],
    }


def effective_chunk(chunk_size: int | None, pixels: int) -> str:
    """The chunk size geometry uses: the given one, or its automatic default for ``pixels``."""
    if chunk_size is not None:
        return str(chunk_size)
    auto = getattr(geo, "_auto_chunk", None)
    return f"auto ({auto(pixels)})" if auto is not None else "library default"


def _timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """((wall s, process CPU s), result) of one call."""
    c0 = time.process_time()
    wall, out = common.time_call(fn)
    return (wall, time.process_time() - c0), out


def _run_worker(latent_size: int, *, samples: int, k: int, probes: int, chunk_size: int | None, timeout_s: float) -> dict:
    cmd = [
        sys.executable, "-m", "benchmarks.scaling_worker", "--latent-size", str(latent_size),
        "--samples", str(samples), "--k", str(k), "--probes", str(probes),
        "--threads", str(torch.get_num_threads()),
    ]
    if chunk_size is not None:
        cmd += ["--chunk-size", str(chunk_size)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(common.REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"latent_size": latent_size, "error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"latent_size": latent_size, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scaling(
    latent_sizes: Sequence[int],
    *,
    samples: int = 1,
    k: int = 20,
    probes: int = 16,
    chunk_size: int | None = None,
    budget_s: float = 900.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Matrix-free geometry at latent sizes (4, s, s) for s in ``latent_sizes``, one process each.

    A size is skipped (and recorded as skipped) when its predicted time, extrapolated from
    the previous size with the exponent fitted so far (1.0 before two sizes are known),
    exceeds ``budget_s``. Returns a JSON-ready dict with one entry per size and the fitted
    exponents ``time_exponent`` (s per sample ~ d^a) and ``memory_exponent`` (extra peak
    RSS ~ d^b).
    """
    rows: list[dict] = []
    for s in latent_sizes:
        d = 4 * s * s
        done = [r for r in rows if "s_per_sample" in r]
        if done:
            expo = common.fit_exponent([r["d"] for r in done], [r["s_per_sample"] for r in done])
            expo = 1.0 if len(done) < 2 or math.isnan(expo) else max(expo, 0.5)
            predicted = done[-1]["s_per_sample"] * samples * (d / done[-1]["d"]) ** expo
            if predicted > budget_s:
                rows.append({"d": d, "latent_size": s, "skipped": f"predicted {predicted:.0f} s > budget {budget_s:.0f} s"})
                log(f"  scaling: d={d} skipped (predicted {predicted:.0f} s)")
                continue
        log(f"  scaling: d={d} (latent 4x{s}x{s}) in a fresh process ...")
        row = _run_worker(s, samples=samples, k=k, probes=probes, chunk_size=chunk_size,
                          timeout_s=max(120.0, 3 * budget_s))
        row.setdefault("d", d)
        row["latent_size"] = s
        rows.append(row)
        if "error" in row:
            log(f"  scaling: d={d} failed: {row['error']}")
    ok = [r for r in rows if "s_per_sample" in r]
    cfg = {k_: (list(v) if isinstance(v, tuple) else v) for k_, v in common.SD_LAYOUT_VAE.items()}
    return {
        "vae": cfg,
        "vae_note": "Stable Diffusion's AutoencoderKL structure (4 blocks, 3 image channels, 4 latent "
        "channels, attention mid-block); block_out_channels scaled from (128, 256, 512, 512) to "
        f"{tuple(cfg['block_out_channels'])}, layers_per_block {cfg['layers_per_block']} (SD: 2), "
        f"norm_num_groups {cfg['norm_num_groups']} (SD: 32), randomly initialised",
        "method": f"log_volume(method='matrix_free', k={k}) + dim_influence(method='hutchinson', "
        f"probes={probes}), chunk_size={'library default (see chunk_size per size)' if chunk_size is None else chunk_size}, "
        f"{samples} sample(s) per size",
        "memory_method": "peak resident set size (resource.getrusage ru_maxrss) of a fresh Python "
        "process per size; extra = peak minus the high-water mark after building the model and "
        "decoding one sample without gradients",
        "sizes": rows,
        "time_exponent": common.fit_exponent([r["d"] for r in ok], [r["s_per_sample"] for r in ok]),
        "memory_exponent": common.fit_exponent([r["d"] for r in ok], [r["extra_rss_mb"] for r in ok]),
    }
