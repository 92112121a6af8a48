"""What a page shows above its content about the run: the partial-run banner, the warnings the
analysis recorded, and the stop of a page that needs the decoder geometry before it exists.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.runs import Run

from .progress import stage_label

__all__ = ["pending_text", "partial_banner", "run_warnings_banner", "require_geometry"]


def pending_text(run: Run) -> str:
    """The pending stages of a partial run, in words."""
    return ", ".join(stage_label(s) for s in run.pending_stages)


def partial_banner(run: Run) -> None:
    """The label every page of a partial run shows above its content."""
    if run.partial:
        done = ", ".join(attack_label(a) for a in run.attacks) or "none"
        st.info(
            f"**Partial run.** Finished: {done}" + (" and the decoder geometry" if run.has_geometry else "")
            + f". Still computing: {pending_text(run)}. Numbers here use the finished stages only and the page "
            "refreshes as each stage lands.",
            icon=":material/hourglass_top:",
        )


def run_warnings_banner(run: Run) -> None:
    """The warnings the analysis recorded in run.json (top-level ``"warnings"``: a list of
    strings), one ``st.warning`` each, and a warning when the decoder geometry finished without
    a single finite log-volume (so every number by distortion quartile is missing). Malformed
    entries never break a page: non-strings are left out and one generic warning says so."""
    import numpy as np

    settings = run.settings if isinstance(run.settings, dict) else {}
    recorded = settings.get("warnings")
    problem = None
    if recorded is None:
        texts: list = []
    elif isinstance(recorded, str):  # one string instead of a list of them: still readable
        texts = [recorded]
    elif isinstance(recorded, list):
        texts = [t for t in recorded if isinstance(t, str)]
        if len(texts) != len(recorded):
            problem = f"a list with {len(recorded) - len(texts)} entries that are not strings"
    else:
        texts, problem = [], f"a {type(recorded).__name__}"
    for text in texts:
        if text.strip():
            st.warning(f"**Analysis warning.** {text}", icon=":material/warning:")
    if problem is not None:
        st.warning(
            f"The warnings recorded in {Path(run.path) / 'run.json'} are malformed: expected \"warnings\" "
            f"to be a list of strings, got {problem}"
            + ("; the readable ones are shown above." if texts else "; none can be shown."),
            icon=":material/warning:",
        )
    if run.has_geometry:
        try:
            values = np.asarray(run.samples["log_volume"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            values = np.array([])
        if not np.isfinite(values).any():
            st.warning(
                "**No log-volume values.** The decoder geometry finished but every sample's log-volume is "
                "missing (NaN) in samples.parquet, so the numbers by distortion quartile (and the findings "
                "built on them) cannot be computed and are left out. The geometry may have failed for every "
                "sample (for instance a decoder whose Jacobian is singular); re-run the analysis with another "
                "influence method or check the model.",
                icon=":material/warning:",
            )


def require_geometry(run: Run) -> None:
    """Stop a page that needs the decoder geometry while a partial run does not have it yet,
    saying so and pointing to what is already usable."""
    if run.has_geometry:
        return
    st.info(
        "This page needs the decoder geometry (log-volume and influence), which has not finished yet "
        f"(still computing: {pending_text(run)}; progress in the sidebar). It opens by itself when ready; "
        "meanwhile the Findings page shows the AUROC and ROC of the finished attacks.",
        icon=":material/hourglass_top:",
    )
    st.page_link("pages/findings.py", label="Go to Findings", icon=":material/fact_check:")
    st.stop()
