"""The runs folder as the Model & data page uses it: which runs are reached through a symbolic link,
which may be deleted (real folders directly inside the runs root, never a link's target), the
settings to resume a run with, and a cost estimate's stages as table rows.
"""
from __future__ import annotations

from pathlib import Path

from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import format_duration, format_per_image, format_percent
from ldminv_core.errors import LdminvError, RunError

from .jobs import resume_config

__all__ = ["estimate_rows", "link_names", "inside_root", "check_deletable", "checked_resume_config"]


def estimate_rows(estimate) -> list[dict]:
    """The cost estimate's stages as table rows, in the order they run: the work (the denoiser's
    calls under its own name), the predicted seconds per image, the stage's time
    (``format_duration``) and its share of the total."""
    count = lambda v: f"{int(v):,}" if v else "–"  # noqa: E731
    calls = estimate.denoiser_calls_label  # "UNet calls", or "transformer calls" (SD3, Flux, DiT)
    rows = [{"stage": s.stage, "what": s.label, "images": count(s.images), "encoder calls": count(s.encoder_calls),
             "decoder JVP/VJP": count(s.decoder_products), calls: count(s.unet_calls),
             "per image": format_per_image(s.seconds_per_image), "est. time": format_duration(s.seconds),
             "share": format_percent(estimate.share(s))} for s in estimate.stages]
    rows.append({"stage": "total", "what": "", "images": "", "encoder calls": "", "decoder JVP/VJP": "",
                 calls: "", "per image": "", "est. time": format_duration(estimate.total_seconds), "share": ""})
    return rows


def link_names(root: Path) -> dict[str, str]:
    """Resolved target -> link name, for the symbolic links directly under the runs root
    (``list_runs`` lists a linked run by its target)."""
    out: dict[str, str] = {}
    try:
        children = list(root.iterdir())
    except OSError:
        return out
    for child in children:
        try:
            if child.is_symlink():
                out[str(child.resolve())] = child.name
        except (OSError, RuntimeError):  # a dangling or looping link
            continue
    return out


def inside_root(path: str | Path, root: Path) -> bool:
    """True when ``path`` resolves to a folder directly inside the resolved runs root."""
    try:
        return Path(path).resolve().parent == root.resolve()
    except (OSError, RuntimeError):
        return False


def check_deletable(path: str | Path, root: Path) -> Path:
    """The run folder at ``path`` when the dashboard may delete it: a real folder (not a
    symbolic link) directly inside the runs root. Otherwise raises RunError: the dashboard
    never deletes outside the runs folder, whatever a link there points to."""
    folder = Path(path)
    if folder.is_symlink():
        raise RunError(f"run {folder}: expected a run folder, got a symbolic link (to {folder.resolve()}); "
                       "not deleting it or its target: remove the link yourself")
    if not inside_root(folder, root):
        raise RunError(f"run {folder}: expected a run folder inside the runs folder {root}, got one that resolves "
                       f"to {folder.resolve()} (reached through a symbolic link or elsewhere); not deleting it")
    return folder


def checked_resume_config(path: str | Path, **kwargs) -> AnalyzeConfig:
    """``resume_config`` with any problem of the stored settings as a RunError naming run.json
    (settings that are not an analysis configuration raise TypeError there)."""
    try:
        return resume_config(path, **kwargs)
    except LdminvError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RunError(f"{Path(path) / 'run.json'}: expected the settings of an analysis under 'config' to "
                       f"resume it, got settings that cannot be used ({exc})") from exc
