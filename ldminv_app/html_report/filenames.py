"""The names of the exported files: ``ldminv-<kind>-<run folder name>[-<attack>]...``, with the
attack as displayed (SimA, PIA, ...) and anything but letters, digits, ``.``, ``_`` and ``-``
replaced by ``_``."""
from __future__ import annotations

import re
from pathlib import Path

from ldminv_core.choices import attack_label
from ldminv_core.runs import Run

__all__ = ["report_filename", "report_json_filename", "scores_filename", "dimensions_filename"]


def safe_name(run: Run | str | Path) -> str:
    # duck-typed: a Run opened before a module reload is not an instance of the reloaded class
    name = Path(run if isinstance(run, (str, Path)) else run.path).name or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def attack_suffix(attack: str | None) -> str:
    return "" if attack is None else "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", attack_label(attack))


def report_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-report-<run folder name>[-<attack, as displayed: SimA, PIA, …>].html``."""
    return f"ldminv-report-{safe_name(run)}{attack_suffix(attack)}.html"


def report_json_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-report-<run folder name>[-<attack>].json`` (the report JSON the HTML report embeds)."""
    return f"ldminv-report-{safe_name(run)}{attack_suffix(attack)}.json"


def scores_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-scores-<run folder name>[-<attack>].csv``."""
    return f"ldminv-scores-{safe_name(run)}{attack_suffix(attack)}.csv"


def dimensions_filename(run: Run | str | Path, attack: str | None = None, t: int | None = None) -> str:
    """``ldminv-dimensions-<run folder name>[-<attack>][-t<t>].csv`` (the Dimensions page's table)."""
    return f"ldminv-dimensions-{safe_name(run)}{attack_suffix(attack)}{'' if t is None else f'-t{int(t)}'}.csv"
