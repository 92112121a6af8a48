"""One size of the matrix-free geometry scaling benchmark, in a fresh process.

Run as ``python -m benchmarks.scaling_worker --latent-size S`` from the repository root; prints
one JSON object on the last line of stdout. A fresh process per size makes its peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's high-water mark of the
process's resident pages, which torch's CPU allocations count towards, unlike tracemalloc)
the peak of that size alone. The baseline high-water mark is read after the model is built
and has decoded one sample without gradients, so ``extra_rss_mb`` is what the geometry
computation itself added on top of the model and the libraries.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common
from benchmarks.bench_geometry import effective_chunk as bench_chunk
from ldminv_core import geometry as geo
from ldminv_core.geometry.tangents import VaeDecoder


def _maxrss_mb() -> float:
    # ru_maxrss is in kibibytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(*, latent_size: int, samples: int, k: int, probes: int, chunk_size: int | None, seed: int) -> dict:
    """Time and peak memory of log_volume(matrix_free, k) + dim_influence(hutchinson, probes).

    Latents (samples, 4, latent_size, latent_size) from N(0, I); decoder = the SD-layout VAE;
    ``chunk_size`` None = geometry's automatic default.
    Returns a JSON-ready dict (times in seconds, memory in MiB).
    """
    vae = common.sd_layout_vae(seed=seed)
    decode = VaeDecoder(vae, scaling_factor=float(vae.config.scaling_factor))

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, int(vae.config.latent_channels), latent_size, latent_size, generator=gen)
    with torch.no_grad():
        t_fwd, img = common.time_call(lambda: decode(z[:1]))
    rss_base = _maxrss_mb()
    t0 = time.perf_counter()
    lv = geo.log_volume(decode, z, k=k, method="matrix_free", chunk_size=chunk_size, seed=seed)
    t1 = time.perf_counter()
    infl = geo.dim_influence(decode, z, method="hutchinson", probes=probes, chunk_size=chunk_size, seed=seed)
    t2 = time.perf_counter()
    rss_peak = _maxrss_mb()
    d = int(z[0].numel())
    l = min(d, k + max(10, k // 2))
    iters = 4
    return {
        "d": d,
        "latent_shape": list(z.shape[1:]),
        "image_shape": list(img.shape[1:]),
        "pixels": int(img[0].numel()),
        "samples": samples,
        "k": k,
        "probes": probes,
        "chunk_size": bench_chunk(chunk_size, int(img[0].numel())),
        "products_per_sample": l * (2 * iters + 1) + probes,
        "forward_s": t_fwd,
        "log_volume_s_per_sample": (t1 - t0) / samples,
        "influence_s_per_sample": (t2 - t1) / samples,
        "s_per_sample": (t2 - t0) / samples,
        "baseline_rss_mb": rss_base,
        "peak_rss_mb": rss_peak,
        "extra_rss_mb": rss_peak - rss_base,
        "finite": bool(torch.isfinite(lv).all() and torch.isfinite(infl).all()),
        "log_volume": [float(v) for v in lv],
        "torch_threads": torch.get_num_threads(),
    }


def measure_path(*, latent_size: int, path: str, full: bool, seed: int) -> dict:
    """Per-sample cost and peak RSS of one log-volume path on one latent of the SD-layout VAE.

    ``path`` "topk": matrix-free top-50 (block Krylov, adaptive); "logdet": SLQ with the default
    probes. Without ``full`` the run is truncated (top-k: 2 Krylov blocks; SLQ: 2 Lanczos steps,
    same probes, so every decoder call has the full path's chunk shape) and the per-sample cost
    is extrapolated as (measured s / products run) x the products of the full path
    (:func:`ldminv_core.geometry.log_volume_products`; top-k: the typical adaptive count).
    """
    vae = common.sd_layout_vae(seed=seed)
    decode = VaeDecoder(vae, scaling_factor=float(vae.config.scaling_factor))

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(1, int(vae.config.latent_channels), latent_size, latent_size, generator=gen)
    with torch.no_grad():
        t_fwd, img = common.time_call(lambda: decode(z))
    rss_base = _maxrss_mb()
    d, p = int(z[0].numel()), int(img[0].numel())
    k = 50
    if path == "topk":
        kw = dict(k=k, kind="topk", log_volume_method="matrix_free", iters=None if full else 1)
        full_products = geo.log_volume_products("matrix_free", d=d, k=k)["jvp"]
    elif path == "logdet":
        kw = dict(k=k, kind="logdet", log_volume_method="slq", iters=None)
        full_products = geo.SLQ_PROBES * min(geo.SLQ_STEPS, d)
    else:
        raise SystemExit(f"--path: expected topk or logdet, got {path!r}")
    steps = geo.SLQ_STEPS if (full or path != "logdet") else 2
    counts: dict = {}
    t0 = time.perf_counter()
    g = geo._geometry(decode, z, influence=None, probes=1, slq_probes=geo.SLQ_PROBES, slq_steps=steps, seed=seed,
                      sample_ids=None, chunk_size=None, oversample=None, progress=None, counts=counts, **kw)
    measured = time.perf_counter() - t0
    rss_peak = _maxrss_mb()
    run_products = int(counts.get("jvp", 0))  # J^T J products (one JVP + one VJP each)
    per_product = measured / max(1, run_products)
    done_full = bool(full)
    return {
        "path": path, "d": d, "pixels": p, "latent_shape": list(z.shape[1:]), "image_shape": list(img.shape[1:]),
        "forward_s": t_fwd, "products_run": run_products,
        "products_per_sample": run_products if done_full else full_products,
        "s_per_product": per_product, "measured_s": measured,
        "s_per_sample": measured if done_full else per_product * full_products,
        "how": ("full run" if done_full else
                f"truncated run of {run_products} J^T J products, extrapolated to {full_products}"),
        "log_volume": float(g.log_volume[0]), "log_volume_error": float(g.log_volume_error[0]),
        "baseline_rss_mb": rss_base, "peak_rss_mb": rss_peak, "extra_rss_mb": rss_peak - rss_base,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent-size", type=int, required=True, help="latent side h = w (d = 4 h w)")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--chunk-size", type=int, default=None, help="default: geometry's automatic chunk size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=common.TORCH_THREADS)
    ap.add_argument("--mode", choices=("scaling", "paths"), default="scaling")
    ap.add_argument("--path", default="topk", help="--mode paths: topk | logdet")
    ap.add_argument("--full", action="store_true", help="--mode paths: run the whole path (no extrapolation)")
    args = ap.parse_args(argv)
    if args.latent_size < 1 or not math.isfinite(args.latent_size):
        raise SystemExit(f"--latent-size: expected a positive integer, got {args.latent_size}")
    common.set_threads(args.threads)
    if args.mode == "paths":
        print(json.dumps(measure_path(latent_size=args.latent_size, path=args.path, full=args.full, seed=args.seed)),
              flush=True)
        return 0
    out = measure(latent_size=args.latent_size, samples=args.samples, k=args.k, probes=args.probes,
                  chunk_size=args.chunk_size, seed=args.seed)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
