"""Moved to ldminv_app.html_report (the HTML report in sections, its tables, the CSV files and
their file names) and ldminv_core.formatting (display formatting); this module only re-exports
them for one release."""
from __future__ import annotations

from ldminv_core.choices import ATTACK_LABELS, attack_label  # noqa: F401 - re-exported
from ldminv_core.evaluation.wording import LOW_FPR_METRICS as _LOW_FPRS  # noqa: F401
from ldminv_core.evaluation.wording import low_fpr_cautions  # noqa: F401
from ldminv_core.formatting import format_rate as _fmt  # noqa: F401
from ldminv_core.formatting import format_rate_ci as _ci_text  # noqa: F401
from ldminv_core.formatting import timesteps_text as _timesteps_text  # noqa: F401

from .html_report.context import ReportContext, collect_arms, prepare  # noqa: F401
from .html_report.csv_export import CSV_COLUMNS, dimension_csv, per_sample_csv, per_sample_table  # noqa: F401
from .html_report.csv_export import _ranks  # noqa: F401
from .html_report.document import build_html_report  # noqa: F401
from .html_report.filenames import (  # noqa: F401
    attack_suffix as _attack_suffix,
    dimensions_filename,
    report_filename,
    report_json_filename,
    safe_name as _safe_name,
    scores_filename,
)
from .html_report.inputs import (  # noqa: F401
    BOOTSTRAP_SEED,
    DEFAULT_DROP_PERCENT,
    DEFAULT_SEED,
    as_run as _as_run,
    check_attack as _check_attack,
    check_drop as _check_drop,
    check_manual as _check_manual,
    check_nonneg_int as _check_nonneg_int,
    check_t as _check_t,
    evaluation as _evaluation,
)
from .html_report.markup import (  # noqa: F401
    BLIND_CURVE_LABEL,
    CI_LEVEL,
    CSS as _CSS,
    METRIC_LABELS as _METRIC_LABELS,
    RANDOM_CURVE_LABEL,
    SECTIONS,
    FigureWriter as _FigureWriter,
    boot_text as _boot_text,
    cautions_html as _cautions_html,
    esc as _esc,
    figure_row as _row,
    html_table as _table,
    kv_table as _kv_table,
    not_maskable as _not_maskable,
    section as _section,
)
from .html_report.sections.findings import findings_body as _findings_body  # noqa: F401
from .html_report.sections.findings import findings_table as _findings_table  # noqa: F401
from .html_report.sections.metrics import arm_notes as _arm_notes  # noqa: F401
from .html_report.sections.roc import roc_figures as _roc_figures  # noqa: F401
from .html_report.sections.settings import manual_text as _manual_text  # noqa: F401
from .html_report.sections.settings import run_rows as _run_rows  # noqa: F401
from .html_report.sections.shift import blind_bars as _blind_bars  # noqa: F401
from .html_report.sections.shift import shift_body as _shift_body  # noqa: F401
from .html_report.tables import arms_table, blind_table, folds_table, random_seed_table  # noqa: F401
from .html_report.tables import count_text as _count_text  # noqa: F401

__all__ = [
    "SECTIONS",
    "CSV_COLUMNS",
    "DEFAULT_DROP_PERCENT",
    "DEFAULT_SEED",
    "build_html_report",
    "arms_table",
    "blind_table",
    "random_seed_table",
    "folds_table",
    "per_sample_table",
    "per_sample_csv",
    "report_filename",
    "report_json_filename",
    "scores_filename",
    "dimensions_filename",
    "dimension_csv",
    "attack_label",
    "low_fpr_cautions",
]
