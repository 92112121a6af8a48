"""The membership-inference report of a finished run (``python -m ldminv_core report RUN``).

- :mod:`.report_json`: :func:`build_report` (evaluate a run, then write the report JSON object of
  the method reference), :func:`evaluate_run` and :func:`report_from_results` (its two steps);
- :mod:`.report_text`: :func:`format_report`, the readable text of that object.

Numbers are written for display by :mod:`ldminv_core.formatting`, findings worded by
:mod:`ldminv_core.evaluation.wording`.
"""
from __future__ import annotations

from .report_json import CI_LEVEL, N_BOOT, build_report, evaluate_run, report_from_results
from .report_text import format_report

__all__ = ["build_report", "evaluate_run", "report_from_results", "format_report", "CI_LEVEL", "N_BOOT"]
