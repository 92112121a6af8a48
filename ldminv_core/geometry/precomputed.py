"""Precomputed decoder geometry: a saved ``geometry`` stage reused when it provably applies.

The decoder geometry (influence and log-volume) is the most expensive stage of an analysis;
for a fixed VAE and image set it never changes. A :class:`PrecomputedGeometry` bundle
(``geometry.npz`` + ``manifest.json`` in one folder, written by :func:`save_precomputed`,
e.g. ``assets/demo/precomputed`` made by ``scripts/make_demo_run.py``) holds, per sample,
the split and file name, the latents the geometry was computed from, the influence and the
log-volume, with the geometry settings and a SHA-256 of the VAE's files.

``run_analysis(config, precomputed=bundle)`` uses it in place of computing the geometry
stage only when :meth:`PrecomputedGeometry.check` finds everything equal: the same VAE
files, the same geometry settings (top-k, influence and log-volume methods, seed, and the probe
count when the influence is a Hutchinson estimate),
the same samples in the same order (split and file name) and latents encoded on this
machine within :data:`LATENT_ATOL` of the stored ones. Otherwise the geometry is computed
as usual; either way run.json's "geometry" records which happened and why.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunError
from ldminv_core.runs import load_npz

__all__ = ["PrecomputedGeometry", "load_precomputed", "save_precomputed", "vae_digest", "LATENT_ATOL"]

#: Largest absolute difference between this machine's latents and the stored ones for which
#: the stored geometry is reused (encoder outputs agree to ~1e-6 across CPU builds).
LATENT_ATOL = 1e-4
_ARRAYS = "geometry.npz"
_MANIFEST = "manifest.json"
#: the geometry settings that must be equal (keys of run.json "geometry")
SETTING_KEYS = ("topk", "influence", "probes", "log_volume_method", "seed")


def vae_digest(model_dir: str | Path) -> str:
    """SHA-256 over the VAE's config and weight files (``<model_dir>/vae/*``, sorted by name).

    Raises:
        RunError: ``model_dir`` has no ``vae`` folder with files.
    """
    folder = Path(model_dir) / "vae"
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise RunError(f"{folder}: expected the VAE's config and weights, found no files")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class PrecomputedGeometry:
    """A saved geometry stage.

    Attributes:
        folder: where it was read from.
        splits: (N,) "member" / "heldout" per sample, in run order.
        names: (N,) image file names (relative to their split's folder).
        latents: (N, C, h, w) float32 latents the geometry was computed from.
        influence: (N, C, h, w) float32.
        log_volume: (N,) float64.
        settings: the geometry settings (:data:`SETTING_KEYS`).
        vae_sha256: :func:`vae_digest` of the model it belongs to.
        provenance: how it was made (script, versions, seconds, date).
    """

    folder: Path
    splits: np.ndarray
    names: np.ndarray
    latents: np.ndarray
    influence: np.ndarray
    log_volume: np.ndarray
    settings: dict
    vae_sha256: str
    provenance: dict

    def check(self, *, samples: Any, latents: np.ndarray, settings: dict, vae_sha256: str) -> tuple[bool, str]:
        """Whether the bundle applies to a run: (usable, reason in words).

        Args:
            samples: the run's samples table (``split``, ``path`` columns), in run order.
            latents: (N, C, h, w) the run's latents, as encoded on this machine.
            settings: the run's geometry settings (at least :data:`SETTING_KEYS`).
            vae_sha256: :func:`vae_digest` of the run's model.
        """
        if vae_sha256 != self.vae_sha256:
            return False, "the VAE files differ from the ones it was computed with"
        # the probe count matters only to an estimated (Hutchinson) influence
        keys = [k for k in SETTING_KEYS if k != "probes" or "hutchinson" in (settings.get("influence"),
                                                                            self.settings.get("influence"))]
        diff = [k for k in keys if settings.get(k) != self.settings.get(k)]
        if diff:
            return False, "geometry settings differ: " + ", ".join(
                f"{k} {self.settings.get(k)!r} there, {settings.get(k)!r} here" for k in diff)
        splits = np.asarray(samples["split"]).astype(str)
        names = np.asarray([Path(p).name for p in samples["path"]]).astype(str)
        if splits.shape != self.splits.shape or not (np.array_equal(splits, self.splits)
                                                      and np.array_equal(names, self.names)):
            return False, f"the samples differ ({len(self.names)} stored, {len(names)} in the run, or other files)"
        lat = np.asarray(latents, dtype=np.float32)
        if lat.shape != self.latents.shape:
            return False, f"latent shape {lat.shape[1:]} differs from the stored {self.latents.shape[1:]}"
        gap = float(np.max(np.abs(lat - self.latents))) if lat.size else 0.0
        if not np.isfinite(gap) or gap > LATENT_ATOL:
            return False, f"this machine's latents differ from the stored ones by {gap:.2e} (> {LATENT_ATOL:g})"
        return True, f"same VAE, settings and samples; latents agree to {gap:.1e}"


def load_precomputed(folder: str | Path) -> PrecomputedGeometry:
    """Read a bundle written by :func:`save_precomputed`.

    Raises:
        RunError: files missing or malformed (file named).
    """
    base = Path(folder)
    try:
        manifest = json.loads((base / _MANIFEST).read_text(encoding="utf-8"))
        arrays = load_npz(base / _ARRAYS, ("splits", "names", "latents", "influence", "log_volume"))
    except FileNotFoundError as exc:
        raise RunError(f"{base}: precomputed geometry is missing a file ({exc.filename})") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"{base}: cannot read the precomputed geometry ({exc})") from exc
    n = len(arrays["names"])
    if not (len(arrays["splits"]) == len(arrays["latents"]) == len(arrays["influence"]) == len(arrays["log_volume"]) == n):
        raise RunError(f"{base / _ARRAYS}: arrays of different lengths")
    return PrecomputedGeometry(
        folder=base,
        splits=arrays["splits"].astype(str),
        names=arrays["names"].astype(str),
        latents=arrays["latents"].astype(np.float32),
        influence=arrays["influence"].astype(np.float32),
        log_volume=arrays["log_volume"].astype(np.float64),
        settings=dict(manifest.get("settings", {})),
        vae_sha256=str(manifest.get("vae_sha256", "")),
        provenance=dict(manifest.get("provenance", {})),
    )


def save_precomputed(folder: str | Path, *, samples: Any, latents: np.ndarray, influence: np.ndarray,
                     log_volume: np.ndarray, settings: dict, vae_sha256: str, provenance: dict) -> Path:
    """Write a bundle (compressed ``geometry.npz`` + ``manifest.json``); returns the folder.

    Args:
        samples: samples table (``split``, ``path``), N rows in run order.
        latents, influence: (N, C, h, w); log_volume: (N,).
        settings: geometry settings (:data:`SETTING_KEYS`); vae_sha256: :func:`vae_digest`.
        provenance: free-form record of how it was made.
    """
    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        base / _ARRAYS,
        splits=np.asarray(samples["split"]).astype(str),
        names=np.asarray([Path(p).name for p in samples["path"]]).astype(str),
        latents=np.asarray(latents, dtype=np.float32),
        influence=np.asarray(influence, dtype=np.float32),
        log_volume=np.asarray(log_volume, dtype=np.float64),
    )
    manifest = {"settings": {k: settings.get(k) for k in SETTING_KEYS}, "vae_sha256": vae_sha256,
                "provenance": provenance}
    (base / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return base
