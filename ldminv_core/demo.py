"""Paths and analysis defaults of the bundled demos (``assets/demo``).

The demo is a small latent diffusion model trained on Fashion-MNIST by
``scripts/train_demo.py``: ``assets/demo/model`` (a diffusers pipeline folder with vae/,
unet/, scheduler/), ``assets/demo/members`` (its training images) and
``assets/demo/heldout`` (images it never saw), 32x32 grayscale PNGs with captions in
``metadata.jsonl``. ``python -m ldminv_core analyze --demo`` analyzes it into
:func:`demo_run_dir` with :data:`DEMO_ANALYZE_DEFAULTS`. ``assets/demo/precomputed`` holds
its decoder geometry (``scripts/make_demo_geometry.py``), which the dashboard's first start
reuses after checking it applies (:mod:`ldminv_core.geometry.precomputed`).

The shift demo (``python -m ldminv_core analyze --demo shift``) shows what the tool says on
pure distribution shift: both of its folders hold images the model never saw, taken from
``assets/demo/heldout`` by class (:func:`build_shift_demo_data`): "members" are the footwear
(:data:`SHIFT_MEMBER_CLASSES`: sandals, sneakers, ankle boots), "held-out" are the clothes
(:data:`SHIFT_HELDOUT_CLASSES`), so the true membership signal is zero by construction and
every difference between the folders is a difference of content. It is analyzed into
:func:`shift_demo_run_dir` with :data:`SHIFT_DEMO_ANALYZE_DEFAULTS` (the demo's settings with
150 + 150 images). The shipped decoder geometry belongs to the membership demo's images: the
analysis checks it, records why it does not apply ("the samples differ") and computes the
geometry for these images, so the shift demo takes about as long as the demo (about 2-3 minutes
on a 2-core machine). Its report states that the files alone separate the folders (the blind
baseline, METHOD.md section 6) and qualifies every membership and geometry finding.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LdminvError
from ldminv_core.runs import default_runs_root

__all__ = [
    "DEMO_DIR",
    "DEMO_MODEL_DIR",
    "DEMO_MEMBERS_DIR",
    "DEMO_HELDOUT_DIR",
    "DEMO_ANALYZE_DEFAULTS",
    "demo_run_dir",
    "demo_available",
    "demo_precomputed",
    "DEMO_PRECOMPUTED_DIR",
    "DEMO_TRACED_DIR",
    "DEMO_KINDS",
    "SHIFT_MEMBER_CLASSES",
    "SHIFT_HELDOUT_CLASSES",
    "SHIFT_DEMO_ANALYZE_DEFAULTS",
    "shift_demo_run_dir",
    "shift_demo_data_dir",
    "build_shift_demo_data",
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_MODEL_DIR = DEMO_DIR / "model"
DEMO_MEMBERS_DIR = DEMO_DIR / "members"
DEMO_HELDOUT_DIR = DEMO_DIR / "heldout"
DEMO_PRECOMPUTED_DIR = DEMO_DIR / "precomputed"
#: The demo model's UNet and VAE encoder traced to TorchScript (``scripts/export_demo_traced.py``;
#: :mod:`ldminv_core.models.traced`): the first start's preview loads them without diffusers.
DEMO_TRACED_DIR = DEMO_DIR / "traced"

#: AnalyzeConfig fields used by ``analyze --demo`` (options given on the command line win).
#: The demo analyzes the first 300 members and 300 held-out images: about 80 s on a quiet
#: 2-core machine with the shipped decoder geometry (two worker threads), about 4 minutes when it is recomputed (256
#: decoder JVPs per image, ``--recompute-geometry``); ``analyze --demo --limit 1000`` takes all
#: of them.
DEMO_ANALYZE_DEFAULTS: dict = {
    "attacks": ("sima", "pia", "loss", "secmi", "pfami"),
    "timesteps": "0:300:10",
    "topk": 50,
    "influence": "auto",
    "probes": "auto",  # unused: the demo's influence is exact (d = 256)
    "batch_size": 100,  # larger UNet batches: SimA, the first result, about 20% sooner
    "seed": 0,
    "limit": 300,
    "residual_dtype": "float32",
}


def demo_run_dir() -> Path:
    """Default run folder of the demo analysis: ``default_runs_root() / "demo"``."""
    return default_runs_root() / "demo"


def demo_available() -> bool:
    """True when the demo model and both image folders exist."""
    return (DEMO_MODEL_DIR / "unet").is_dir() and DEMO_MEMBERS_DIR.is_dir() and DEMO_HELDOUT_DIR.is_dir()


def demo_precomputed():
    """The demo's shipped geometry (:class:`ldminv_core.geometry.precomputed.PrecomputedGeometry`), or
    None when this checkout has none or it cannot be read."""
    from .errors import RunError
    from ldminv_core.geometry.precomputed import load_precomputed

    if not (DEMO_PRECOMPUTED_DIR / "geometry.npz").is_file():
        return None
    try:
        return load_precomputed(DEMO_PRECOMPUTED_DIR)
    except RunError:
        return None


#: What ``analyze --demo [KIND]`` can run: "membership" (the default: the model's training images
#: against held-out ones) and "shift" (held-out images of two groups of classes: no member at all).
DEMO_KINDS: tuple[str, ...] = ("membership", "shift")

#: Captions (``metadata.jsonl`` "text") of the held-out classes the shift demo calls "members".
SHIFT_MEMBER_CLASSES: tuple[str, ...] = ("a photo of a sandal", "a photo of a sneaker", "a photo of an ankle boot")
#: Captions of the held-out classes the shift demo calls "held-out" (bags are in neither folder).
SHIFT_HELDOUT_CLASSES: tuple[str, ...] = (
    "a photo of a t-shirt", "a photo of trousers", "a photo of a pullover", "a photo of a dress",
    "a photo of a coat", "a photo of a shirt",
)

#: AnalyzeConfig fields used by ``analyze --demo shift``: the demo's, on the first 150 images of
#: each folder (its decoder geometry is computed, 256 JVPs per image, so the shift demo takes about
#: as long as the demo with its shipped geometry); ``--limit 1000`` takes all of them (335 footwear
#: and 565 clothes images).
SHIFT_DEMO_ANALYZE_DEFAULTS: dict = {**DEMO_ANALYZE_DEFAULTS, "limit": 150}

_SHIFT_FOLDERS = ("members", "heldout")
_SHIFT_MANIFEST = "shift-demo.json"


def shift_demo_run_dir() -> Path:
    """Default run folder of the shift demo: ``default_runs_root() / "demo-shift"``."""
    return default_runs_root() / "demo-shift"


def shift_demo_data_dir() -> Path:
    """Where the shift demo's two image folders are built: ``$LDMINV_HOME/demo-shift-data`` (beside
    the runs folder, not in it)."""
    return default_runs_root().parent / "demo-shift-data"


def _shift_selection(source: Path) -> dict[str, list[dict]]:
    """The metadata rows of ``source``'s images per shift-demo folder, in file-name order."""
    meta = source / "metadata.jsonl"
    if not meta.is_file():
        raise LdminvError(f"{meta}: the shift demo needs the demo's held-out captions (class names); file missing")
    rows = []
    for i, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LdminvError(f"{meta}, line {i}: expected a JSON object ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                raise LdminvError(f"{meta}, line {i}: expected an object with a 'file_name' string")
            rows.append(row)
    rows.sort(key=lambda r: r["file_name"])
    picked = {
        "members": [r for r in rows if r.get("text") in SHIFT_MEMBER_CLASSES],
        "heldout": [r for r in rows if r.get("text") in SHIFT_HELDOUT_CLASSES],
    }
    for folder, classes in (("members", SHIFT_MEMBER_CLASSES), ("heldout", SHIFT_HELDOUT_CLASSES)):
        if not picked[folder]:
            raise LdminvError(f"{meta}: no image captioned {' / '.join(repr(c) for c in classes)}; the shift demo's "
                              f"{folder} folder would be empty")
        missing = [r["file_name"] for r in picked[folder] if not (source / r["file_name"]).is_file()]
        if missing:
            raise LdminvError(f"{source}: {len(missing)} image(s) named in metadata.jsonl are missing, e.g. "
                              f"{missing[0]}")
    return picked


def _manifest(source: Path, picked: dict[str, list[dict]]) -> dict:
    return {
        "source": str(source),
        "member_classes": list(SHIFT_MEMBER_CLASSES),
        "heldout_classes": list(SHIFT_HELDOUT_CLASSES),
        "files": {k: [[r["file_name"], (source / r["file_name"]).stat().st_size] for r in v] for k, v in picked.items()},
    }


def build_shift_demo_data(root: str | Path | None = None, *, source: str | Path | None = None) -> tuple[Path, Path]:
    """The shift demo's image folders, built (or reused when already built from the same files).

    ``root/members`` gets the images of ``source`` (default ``assets/demo/heldout``) captioned with
    one of :data:`SHIFT_MEMBER_CLASSES`, ``root/heldout`` those of :data:`SHIFT_HELDOUT_CLASSES`;
    each folder gets the files' own ``metadata.jsonl`` lines (file name, caption). The folders
    share no image, and none of them was a training image of the demo model. Deterministic: files
    are taken in file-name order and keep their names; ``root/shift-demo.json`` records the
    selection, and a root whose record matches is reused as it is. The folders are written under a
    temporary name first and moved into place, so an interrupted build leaves nothing half-made.

    Args:
        root: where to build (default :func:`shift_demo_data_dir`).
        source: the folder of held-out demo images with captions (default :data:`DEMO_HELDOUT_DIR`).

    Returns:
        (members folder, held-out folder).

    Raises:
        LdminvError: the source folder, its metadata.jsonl or an image is missing, or ``root`` exists
            and is not a folder this function built.
    """
    src = Path(source) if source is not None else DEMO_HELDOUT_DIR
    base = Path(root).expanduser() if root is not None else shift_demo_data_dir()
    if not src.is_dir():
        raise LdminvError(f"{src}: the demo's held-out images are missing; create them with: python "
                          "scripts/train_demo.py")
    picked = _shift_selection(src)
    manifest = _manifest(src, picked)
    record = base / _SHIFT_MANIFEST
    if record.is_file():
        try:
            same = json.loads(record.read_text(encoding="utf-8")) == manifest
        except (OSError, json.JSONDecodeError):
            same = False
        if same and all(len(list((base / f).glob("*.png"))) == len(picked[f]) for f in _SHIFT_FOLDERS):
            return base / "members", base / "heldout"
    if base.exists() and not record.is_file() and (not base.is_dir() or any(base.iterdir())):
        raise LdminvError(f"{base}: exists and is not a shift-demo data folder (no {_SHIFT_MANIFEST}); move it away "
                          "or set LDMINV_HOME to another folder")
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=base.parent))
    try:
        for folder in _SHIFT_FOLDERS:
            (tmp / folder).mkdir()
            for row in picked[folder]:
                shutil.copyfile(src / row["file_name"], tmp / folder / row["file_name"])
            lines = "".join(json.dumps(row) + "\n" for row in picked[folder])
            (tmp / folder / "metadata.jsonl").write_text(lines, encoding="utf-8")
        (tmp / _SHIFT_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if base.exists():  # an outdated build of ours: replaced
            old = base.with_name(f".{base.name}-old-{os.getpid()}")
            os.replace(base, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, base)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return base / "members", base / "heldout"
