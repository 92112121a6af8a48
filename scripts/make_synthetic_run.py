"""Write a synthetic, finished run folder of any size (no model): for benchmarks and tests.

The folder follows the run contract (METHOD.md section 3) and is written through
:class:`ldminv_core.runs.RunWriter`, the large arrays as memory-mapped ``.npy`` files filled
in blocks of samples, so this script's own memory stays bounded (about 100 MB) whatever the size.

Data: one maskable attack ``sima`` with per-coordinate terms ``eps**2 * scale`` (eps ~ N(0, 1)),
``influence = shared pattern + per-sample noise``. Members carry a small planted signal: their
terms on their own top-2 % influence coordinates are smaller (up to 30 %, strongest at a third
of the timesteps), so AUROC curves are not flat and dropping low-influence coordinates helps.
log_volume is N(0, 1) with members shifted by +0.2.

Usage (from the repository root)::

    python scripts/make_synthetic_run.py --out /tmp/big_run --n 5000 --latent 4,64,64 \\
        --timesteps 20 --dtype float16 --seed 0

N = 5000, 4x64x64, T = 20, float16 writes residuals/sima.npy of 3.3 GB in well under a minute.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldminv_core.errors import LdminvError  # noqa: E402
from ldminv_core.runs import RunWriter

__all__ = ["write_synthetic_run", "main"]

#: Elements of one block of terms written at a time (float32 working copy: 64 MiB).
_BLOCK_ELEMENTS = 16 * 1024 * 1024
#: Share of each sample's coordinates (its highest influence) carrying the member signal.
SIGNAL_SHARE = 0.02
#: Largest relative reduction of a member's terms on its signal coordinates.
SIGNAL_STRENGTH = 0.3


def _parse_latent(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as exc:
        raise LdminvError(f"--latent: expected C,h,w (e.g. 4,64,64), got {text!r}") from exc
    if len(dims) != 3 or min(dims) < 1:
        raise LdminvError(f"--latent: expected three positive integers C,h,w, got {text!r}")
    return dims  # type: ignore[return-value]


def signal_profile(t_count: int) -> np.ndarray:
    """(T,) relative reduction of the members' signal coordinates at each timestep index."""
    k = np.arange(t_count, dtype=np.float64)
    centre, width = t_count / 3.0, max(1.0, t_count / 4.0)
    return SIGNAL_STRENGTH * np.exp(-(((k - centre) / width) ** 2))


def write_synthetic_run(
    out: str | Path,
    *,
    n: int,
    latent_shape: tuple[int, int, int],
    timesteps: int,
    dtype: str = "float16",
    seed: int = 0,
    log=None,
) -> Path:
    """Write a complete synthetic run at ``out`` (a new or empty folder) and return its path.

    ``n`` samples (the first ``n // 2`` after a seeded shuffle are members), ``latent_shape``
    (C, h, w), ``timesteps`` T (evenly spaced in 0..999), residuals of ``dtype`` (float16 or
    float32) of shape (n, T, C, h, w). Deterministic given ``seed``.
    """
    if n < 4:
        raise LdminvError(f"n: expected at least 4 samples, got {n}")
    if timesteps < 1:
        raise LdminvError(f"timesteps: expected at least 1, got {timesteps}")
    if np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise LdminvError(f"dtype: expected float16 or float32, got {dtype!r}")
    say = log or (lambda msg: None)
    c, h, w = latent_shape
    d = c * h * w
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int8)
    labels[rng.permutation(n)[: n // 2]] = 1
    log_volume = rng.standard_normal(n) + 0.2 * labels
    ts = [int(round(i * 1000 / timesteps)) for i in range(timesteps)]
    folder = Path(out).expanduser()
    samples = pd.DataFrame({
        "sample_id": np.arange(n),
        "path": [str(folder / "images" / f"img_{i:06d}.png") for i in range(n)],
        "split": np.where(labels == 1, "member", "heldout"),
        "caption": [""] * n,
        "log_volume": log_volume.astype(np.float64),
    })
    attacks = {"sima": {"kind": "terms", "timesteps": ts, "p": 2, "dtype": str(np.dtype(dtype))}}
    writer = RunWriter(folder, settings={"synthetic": True, "seed": int(seed)}, samples=samples)
    try:
        # no "model" key: the pages then say at once that no reconstruction can be decoded
        writer.update(latent_shape=[c, h, w], attacks=attacks, image_shape=[3, 8 * h, 8 * w])
        pattern = rng.standard_normal(d).astype(np.float32)
        latents = writer.open_array("latents.npy", (n, c, h, w), np.float32)
        influence = writer.open_array("influence.npy", (n, c, h, w), np.float32)
        terms = writer.open_array("residuals/sima.npy", (n, timesteps, c, h, w), dtype)
        profile = signal_profile(timesteps).astype(np.float32)
        block = max(1, _BLOCK_ELEMENTS // (timesteps * d))
        n_signal = max(1, int(round(SIGNAL_SHARE * d)))
        t0 = time.perf_counter()
        for start in range(0, n, block):
            stop = min(n, start + block)
            b = stop - start
            inf = pattern[None, :] + 0.5 * rng.standard_normal((b, d), dtype=np.float32)
            influence[start:stop] = inf.reshape(b, c, h, w)
            latents[start:stop] = rng.standard_normal((b, c, h, w), dtype=np.float32)
            # the member signal: each member's own top-influence coordinates
            top = np.argpartition(inf, d - n_signal, axis=1)[:, d - n_signal:]
            scale = np.ones((b, timesteps, d), dtype=np.float32)
            member_rows = np.flatnonzero(labels[start:stop] == 1)
            for r in member_rows:
                scale[r][:, top[r]] = 1.0 - profile[:, None]
            eps = rng.standard_normal((b, timesteps, d), dtype=np.float32)
            np.square(eps, out=eps)
            eps *= scale
            terms[start:stop] = eps.reshape(b, timesteps, c, h, w).astype(dtype)
            if stop == n or (start // block) % 20 == 0:
                say(f"  samples {stop}/{n} ({time.perf_counter() - t0:.1f} s)")
        for arr in (latents, influence, terms):
            arr.flush()
        del latents, influence, terms
        for stage in ("encode", "sima", "geometry"):
            writer.mark_stage_done(stage)
        return writer.finish()
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="new or empty run folder")
    ap.add_argument("--n", type=int, default=5000, help="samples (half members)")
    ap.add_argument("--latent", default="4,64,64", help="latent shape C,h,w")
    ap.add_argument("--timesteps", type=int, default=20, help="number of timesteps T")
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        latent = _parse_latent(args.latent)
        t0 = time.perf_counter()
        path = write_synthetic_run(args.out, n=args.n, latent_shape=latent, timesteps=args.timesteps,
                                   dtype=args.dtype, seed=args.seed, log=print)
    except LdminvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
