"""The run folder's fixed names: its files and folders, the samples table's columns, the attacks a
run may hold, which entries ldminv owns, and the order of a run's stages.

Layout (fixed by the method reference, section 3)::

    run.json                 settings, provenance, "status": "running" | "complete", "stages"
    samples.parquet          one row per image: sample_id, path, split, caption, log_volume
    latents.npy              float32 (N, C, h, w) scaled encoder means
    influence.npy            float32 (N, C, h, w) 0.5 * log(G_ii + 1e-12)
    residuals/<attack>.npy   (N, T, C, h, w) per-coordinate attack terms (float32 or float16)
    scores/<attack>.npy      (N,) membership scores of attacks that are not maskable (PFAMI)
"""
from __future__ import annotations

import re

from ..choices import ATTACK_NAMES

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "RUN_JSON",
    "SAMPLES",
    "LATENTS",
    "INFLUENCE",
    "LOCK",
    "SAMPLE_COLUMNS",
    "SPLITS",
    "KNOWN_ATTACKS",
    "ATTACK_KINDS",
    "OWNED_FILES",
    "OWNED_DIRS",
    "CACHE_DIR",
    "planned_stages",
]

RUN_FORMAT = "ldminv-run"
RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
SAMPLES = "samples.parquet"
LATENTS = "latents.npy"
INFLUENCE = "influence.npy"
LOCK = "run.lock"
SAMPLE_COLUMNS = ("sample_id", "path", "split", "caption", "log_volume")
SPLITS = ("member", "heldout")
#: Attack names a run.json may hold (:data:`ldminv_core.choices.ATTACK_NAMES`, the same as
#: ``ldminv_core.attacks.ATTACKS``, checked by a test; kept light so that reading a run does not
#: import torch).
KNOWN_ATTACKS: tuple[str, ...] = ATTACK_NAMES
#: ``attacks.<name>.kind`` values: per-coordinate terms (residuals/) or stored scores (scores/).
ATTACK_KINDS: tuple[str, ...] = ("terms", "scores")
#: Files directly in a run folder that ldminv writes (umap.* by ldminv_core.embedding).
OWNED_FILES: frozenset[str] = frozenset({RUN_JSON, SAMPLES, LATENTS, INFLUENCE, LOCK, "umap.npy", "umap.json",
                                        "blind_features.npz"})
#: Folders of a run: residuals/<attack>.npy, scores/<attack>.npy, _work/ (analyze's scratch),
#: .ldminv-cache/ (derived arrays the evaluation and the dashboard re-compute when missing).
CACHE_DIR = ".ldminv-cache"
OWNED_DIRS: frozenset[str] = frozenset({"residuals", "scores", "_work", CACHE_DIR})
#: Owned folders whose whole content is ldminv's (no per-file check).
_SCRATCH_DIRS = frozenset({"_work", CACHE_DIR})
# temporary files of files.atomic_write_bytes / embedding._atomic_write: ".<name>.<random>.tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


def _owned_tmp(name: str, owned: object) -> bool:
    """Whether ``name`` is ldminv's temporary file of one of the names in ``owned``."""
    m = _TMP_RE.match(name)
    return bool(m) and m.group("name") in owned


def planned_stages(settings: dict) -> tuple[str, ...]:
    """The stages of a run in the order ``analyze`` computes them: "encode", "blind" (the blind
    baseline's model-free features of the files; runs whose run.json has a "blind" entry, i.e.
    every run analysed since the stage exists), the attacks that store per-coordinate terms,
    "geometry", then the attacks that store scores (cheap results first, so a partial run has
    AUROC and ROC curves as early as possible).

    Args:
        settings: run.json (or the analysis settings), whose "attacks" is an object of attack
            name -> spec (or a list of names).
    """
    attacks = settings.get("attacks", {})
    if not isinstance(attacks, dict):
        attacks = {str(a): {} for a in attacks}
    terms = [a for a, spec in attacks.items() if (spec or {}).get("kind", "terms") == "terms"]
    scored = [a for a in attacks if a not in terms]
    blind = ("blind",) if "blind" in settings else ()
    return ("encode", *blind, *terms, "geometry", *scored)
