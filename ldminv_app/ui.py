"""Moved to ldminv_app.notices, progress, startup, banners, sidebar, widgets, timestep_text, frame,
cards and blind; this module only re-exports them for one release."""
from __future__ import annotations

from ldminv_core.choices import ATTACK_LABELS, attack_label

from .banners import pending_text, partial_banner, require_geometry, run_warnings_banner
from .blind import BLIND_CURVE, blind_curve, blind_result, shift_note
from .cards import (FINDING_LABELS, METRIC_LABELS, VERDICT_COLORS, _per_fold, arm_drop_cell, arm_metric_caption,
                    arm_t_cell, auroc_note, below_chance_captions, ci_text, finding_card, low_fpr_text,
                    metric_t_text, statement_text, verdict_badge)
from .frame import _use_app_navigation, page_frame, require_run
from .notices import guard, show_error, show_notice
from .progress import (_STAGE_LABELS, _job_detail, _rate_text, _samples_text, follow_job, job_progress_text,
                       live_job_progress, stage_label)
from .sidebar import _resume_job, live_analysis_status, path_html, render_sidebar, run_title
from .startup import (_DEMO_PENDING, _STARTUP_DONE, DEMO_INTRO, DEMO_JOB_ID, _demo_module, demo_config,
                      demo_pending, first_results, prepare_demo, stage_order, start_demo_job, startup_run)
from .timestep_text import _protocol_ts, headline_t_caption, protocol_t_text, sidebar_t_agrees, t_scope_text
from .widgets import PROTOCOL_LABELS, _sync, _sync_t, attack_selector, protocol_selector, timestep_selector

__all__ = [
    "ATTACK_LABELS", "attack_label", "show_error", "guard", "show_notice", "startup_run", "demo_pending",
    "prepare_demo", "render_sidebar", "attack_selector", "timestep_selector", "protocol_selector",
    "PROTOCOL_LABELS", "headline_t_caption", "protocol_t_text", "sidebar_t_agrees", "t_scope_text",
    "finding_card", "verdict_badge", "statement_text", "ci_text", "metric_t_text", "arm_t_cell",
    "arm_drop_cell", "arm_metric_caption", "auroc_note", "low_fpr_text", "below_chance_captions",
    "blind_result", "BLIND_CURVE", "blind_curve", "shift_note", "page_frame", "require_run", "stage_label",
    "follow_job", "job_progress_text", "live_job_progress", "live_analysis_status", "path_html",
    "partial_banner", "pending_text", "require_geometry", "start_demo_job", "stage_order", "first_results",
    "run_title", "run_warnings_banner", "DEMO_INTRO", "DEMO_JOB_ID", "demo_config", "FINDING_LABELS",
    "METRIC_LABELS", "VERDICT_COLORS",
]
