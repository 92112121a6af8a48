"""The export of a run's findings: a self-contained HTML report and CSV files.

- :mod:`.document`: :func:`~.document.build_html_report`, the HTML report as numbered sections;
- :mod:`.sections`: one module per kind of section (shift check, findings, settings, metrics,
  ROC, curves, distortion, report JSON);
- :mod:`.tables`: the tables the report and the pages share (arms, folds, blind, random seeds);
- :mod:`.csv_export`: the per-sample scores and the Dimensions table as CSV;
- :mod:`.filenames`: the names of the downloaded files;
- :mod:`.markup`: the HTML pieces (section, table, figure, escaping) and the style sheet;
- :mod:`.inputs`: the argument checks and the evaluation every export starts from.

The public names of the export are importable from here.
"""
from __future__ import annotations

from .csv_export import CSV_COLUMNS, dimension_csv, per_sample_csv, per_sample_table
from .document import build_html_report
from .filenames import dimensions_filename, report_filename, report_json_filename, scores_filename
from .inputs import BOOTSTRAP_SEED, DEFAULT_DROP_PERCENT, DEFAULT_SEED
from .markup import BLIND_CURVE_LABEL, CI_LEVEL, RANDOM_CURVE_LABEL, SECTIONS
from .tables import arms_table, blind_table, folds_table, random_seed_table

__all__ = [
    "BLIND_CURVE_LABEL", "BOOTSTRAP_SEED", "CI_LEVEL", "CSV_COLUMNS", "DEFAULT_DROP_PERCENT", "DEFAULT_SEED",
    "RANDOM_CURVE_LABEL", "SECTIONS", "arms_table", "blind_table", "build_html_report", "dimension_csv",
    "dimensions_filename", "folds_table", "per_sample_csv", "per_sample_table", "random_seed_table",
    "report_filename", "report_json_filename", "scores_filename",
]
