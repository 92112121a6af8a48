"""Session state of the dashboard: the active run, the attack and timestep in use, the
manual mask picked on the Dimensions page.

All keys live here so that every page reads and writes the same names:

- ``active_run``          str, resolved path of the run every page shows (None before one is open)
- ``attack``              str, the attack in use (shared by the sidebar and the Masks & ROC page)
- ``timestep_by_attack``  dict "<run path>|<attack>" -> timestep in use (default: best baseline t)
- ``manual_coords``       dict run path -> sorted list of flat coordinate indices (Dimensions page)
- ``analysis_job``        id of the background analysis this session started (Model & data page)
- ``confirm_delete``      path of the run waiting for a delete confirmation, or None
- ``notice``              (kind, text) message to show once after a rerun, or None
- ``startup_error``       message of a failed start-up (bad LDMINV_RUN, demo failure), or None
- ``protocol``            evaluation protocol of every number shown: "standard", "paper" or "honest"
- ``folds``               cross-fitting folds of the honest protocol (2..10)

The session sits above :mod:`ldminv_app.cache`: the cache takes every choice as an explicit argument,
and the functions at the end of this module (:func:`evaluation`, :func:`protocol_evaluations`,
:func:`baseline_scores`, :func:`warm_controls`) fill in the session's protocol and folds.

Widgets bound to shared values use their own keys (``sidebar_attack``, ``masks_attack``,
``sidebar_t``) and copy into the canonical keys above in their ``on_change`` callbacks.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from ldminv_core.choices import DEFAULT_PROTOCOL, PROTOCOLS
from ldminv_core.runs import Run

from . import cache

__all__ = [
    "ACTIVE_RUN",
    "ATTACK",
    "TIMESTEPS",
    "MANUAL_COORDS",
    "JOB_ID",
    "CONFIRM_DELETE",
    "NOTICE",
    "STARTUP_ERROR",
    "PROTOCOL",
    "FOLDS",
    "FOLDS_RANGE",
    "current_protocol",
    "current_folds",
    "ENV_RUN",
    "init_state",
    "active_run_path",
    "set_active_run",
    "active_run",
    "current_attack",
    "set_attack",
    "current_t_index",
    "set_timestep",
    "manual_coords",
    "set_manual_coords",
    "notify",
    "pop_notice",
    "evaluation",
    "protocol_evaluations",
    "baseline_scores",
    "warm_controls",
]

ACTIVE_RUN = "active_run"
ATTACK = "attack"
TIMESTEPS = "timestep_by_attack"
MANUAL_COORDS = "manual_coords"
JOB_ID = "analysis_job"
CONFIRM_DELETE = "confirm_delete"
NOTICE = "notice"
STARTUP_ERROR = "startup_error"
PROTOCOL = "protocol"
FOLDS = "folds"
#: The honest protocol's fold counts the sidebar offers (least, most).
FOLDS_RANGE = (2, 10)

#: Environment variable naming a run folder to open at start-up instead of the demo.
ENV_RUN = "LDMINV_RUN"

_DEFAULTS = {
    ACTIVE_RUN: None,
    ATTACK: None,
    TIMESTEPS: {},
    MANUAL_COORDS: {},
    JOB_ID: None,
    CONFIRM_DELETE: None,
    NOTICE: None,
    STARTUP_ERROR: None,
    PROTOCOL: "standard",
    FOLDS: 5,
}


def init_state() -> None:
    """Create every key with its default (existing values are kept)."""
    for key, value in _DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value.copy() if isinstance(value, dict) else value


def active_run_path() -> str | None:
    """Path of the active run, or None."""
    return st.session_state.get(ACTIVE_RUN)


def set_active_run(path: str | os.PathLike) -> Run:
    """Open the run at ``path`` and make it the active run.

    Raises the core's RunError (and leaves the active run unchanged) when ``path`` is not a
    finished run folder.
    """
    run = cache.open_run(path)
    st.session_state[ACTIVE_RUN] = str(run.path)
    attack = st.session_state.get(ATTACK)
    if attack not in run.attacks:
        st.session_state[ATTACK] = default_attack(run)
    return run


def active_run() -> Run | None:
    """The active run, or None when none is open (or it vanished; then it is unset)."""
    path = active_run_path()
    if path is None:
        return None
    try:
        return cache.open_run(path)
    except Exception as exc:  # noqa: BLE001 - a deleted or broken run must not break every page
        st.session_state[ACTIVE_RUN] = None
        notify("warning", f"The run {path} can no longer be opened ({exc}); choose another one.")
        return None


def default_attack(run: Run) -> str:
    """The first maskable attack of the run (else its first attack)."""
    for name in run.attacks:
        if run.is_maskable(name):
            return name
    return run.attacks[0]


def current_attack(run: Run) -> str:
    """The attack in use for ``run`` (set to a default one when unset or not in the run)."""
    attack = st.session_state.get(ATTACK)
    if attack not in run.attacks:
        attack = default_attack(run)
        st.session_state[ATTACK] = attack
    return attack


def set_attack(attack: str) -> None:
    st.session_state[ATTACK] = attack


def _t_key(run: Run, attack: str) -> str:
    return f"{run.path}|{attack}"


def current_t_index(run: Run, attack: str) -> int | None:
    """Index into ``run.timesteps(attack)`` of the timestep in use; None for attacks without
    a timestep axis (PFAMI). Defaults to the best baseline timestep."""
    if not run.is_maskable(attack):
        return None
    timesteps = run.timesteps(attack)
    chosen = st.session_state[TIMESTEPS].get(_t_key(run, attack))
    if chosen in timesteps:
        return timesteps.index(chosen)
    best = cache.best_t_index(run, attack, protocol=current_protocol(), folds=current_folds())
    st.session_state[TIMESTEPS][_t_key(run, attack)] = timesteps[best]
    return best


def set_timestep(run: Run, attack: str, t: int) -> None:
    st.session_state[TIMESTEPS][_t_key(run, attack)] = int(t)


def manual_coords(run: Run) -> list[int]:
    """Flat coordinate indices picked for the manual mask of ``run`` (sorted)."""
    return list(st.session_state[MANUAL_COORDS].get(str(run.path), []))


def set_manual_coords(run: Run, coords) -> None:
    st.session_state[MANUAL_COORDS][str(run.path)] = sorted({int(c) for c in coords})


def current_protocol() -> str:
    """The evaluation protocol every page uses (the sidebar's choice; default "standard")."""
    value = st.session_state.get(PROTOCOL, "standard")
    return value if value in PROTOCOLS else DEFAULT_PROTOCOL


def current_folds() -> int:
    """Cross-fitting folds of the honest protocol (default 5)."""
    try:
        return min(FOLDS_RANGE[1], max(FOLDS_RANGE[0], int(st.session_state.get(FOLDS, 5))))
    except (TypeError, ValueError):
        return 5


def notify(kind: str, text: str) -> None:
    """Remember a message ("success", "info", "warning", "error") for the next script run."""
    st.session_state[NOTICE] = (kind, text)


def pop_notice() -> tuple[str, str] | None:
    notice = st.session_state.get(NOTICE)
    st.session_state[NOTICE] = None
    return notice


def env_run_path() -> str | None:
    """The run folder named by the LDMINV_RUN environment variable, if any."""
    value = os.environ.get(ENV_RUN, "").strip()
    return str(Path(value).expanduser()) if value else None


#: Plain (non-widget) copy of the Masks & ROC controls. Streamlit drops a widget's key once a
#: page without that widget runs, so other pages (Export) read the settings from here.
MASK_SETTINGS = "mask_settings"
MASK_SETTING_KEYS = (
    "drop_percent", "use_random", "random_seed", "use_global", "n_boot",
    "use_manual", "manual_channels", "manual_positions", "manual_use_picked",
)


def remember_mask_settings() -> None:
    """Copy the Masks & ROC widget values into :data:`MASK_SETTINGS` (call after the widgets)."""
    st.session_state[MASK_SETTINGS] = {
        key: st.session_state[key] for key in MASK_SETTING_KEYS if key in st.session_state
    }


def mask_settings() -> dict:
    """The Masks & ROC settings last used (empty before that page ran)."""
    return dict(st.session_state.get(MASK_SETTINGS, {}))


def restore_mask_widget(key: str) -> bool:
    """Put the Masks & ROC widget ``key``'s last value back before the widget is drawn: Streamlit
    forgets a widget's value when a run of another page does not draw it, so the drop slider
    returned to 40 % after a visit to another page. True when a value was restored (the widget is
    then drawn without a default of its own)."""
    if key in st.session_state:
        return False
    saved = mask_settings()
    if key not in saved:
        return False
    st.session_state[key] = saved[key]
    return True


# --------------------------------------------------------------------------- the cache at the session's choices


def evaluation(run: Run, attack: str, *, n_boot: int | None = None):
    """The cached ``Evaluation`` of ``attack`` under the session's (sidebar) protocol and folds
    (:func:`ldminv_app.cache.evaluation`; ``n_boot`` defaults to ``cache.PAGE_N_BOOT``)."""
    return cache.evaluation(run, attack, protocol=current_protocol(), folds=current_folds(), n_boot=n_boot)


def protocol_evaluations(run: Run, attack: str, *, n_boot: int | None = None) -> dict:
    """The cached evaluation of every protocol, honest with the session's folds."""
    return cache.protocol_evaluations(run, attack, folds=current_folds(), n_boot=n_boot)


def baseline_scores(run: Run, attack: str):
    """Membership scores without any mask, (N, T) or (N, 1) (:func:`ldminv_app.cache.baseline_scores`)."""
    return cache.baseline_scores(run, attack, protocol=current_protocol(), folds=current_folds())


def warm_controls(run: Run, attack: str, drop: float | None, t_index: int) -> None:
    """After a Masks & ROC run: the other protocols at this drop and t and this protocol's
    neighbouring timesteps, in the background (:func:`ldminv_app.cache.warm_controls`)."""
    cache.warm_controls(run, attack, drop, t_index, protocol=current_protocol(), folds=current_folds())
