"""The HTML report of one attack of a run under one protocol: :func:`build_html_report` writes one
self-contained HTML file that opens offline in any browser, as numbered sections:

1. the shift check (METHOD.md section 6: can the files alone, without the model, tell the folders
   apart? The blind baseline per feature group, its chart, and what to do when they can);
2. the findings under the chosen protocol (each under its title, with a one-line summary; a
   finding on folders the files alone separate says so in its verdict and caveat);
3. the run's settings and provenance, then the settings that produced the numbers (protocol,
   attack, t, drop percentage, random seeds, masks);
4. the metrics of every arm with bootstrap intervals and the t / drop that produced them (the
   folds' choices under ``honest``; every TPR@1%FPR with the exact Clopper-Pearson interval of its
   count and the number of held-out images its 1% rests on; an AUROC whose interval lies below
   0.5 named as below chance), and the ROC curves (the blind baseline's dashed beside the
   attack's);
5. metrics against drop percentage and timestep;
6. the distortion figures and the mean influence heatmap;
7. the agreement between the run's attacks (METHOD.md section 7: the samples each flags at the
   1%-FPR threshold, Jaccard and Spearman per pair, who flags whom with thumbnails);
8. the exposure list: the member images most at risk (rank among the members, the attacks flagging
   them at 1% FPR, log-volume, thumbnails), so an owner knows which training images to look at first;
9. a link that saves the report JSON of the method reference (a ``data:`` URL, not printed).

plotly.js is inlined once, with the first figure; every later figure reuses it. Every number comes
from :class:`ldminv_core.evaluation.Evaluation` (the report JSON from the same evaluation through
``report.report_from_results``) and the figures from ``ldminv_app.figures``, the code the
dashboard pages use, so the exported numbers equal those on screen and in ``report --json``.
Conventions: labels 1 = member; scores higher = member (score = -statistic).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import DEFAULT_N_BOOT
from ldminv_core.runs import Run

from .context import ReportContext, collect_arms, prepare
from .inputs import DEFAULT_DROP_PERCENT, DEFAULT_SEED
from .markup import CSS, SECTIONS, esc, kv_table, section
from .sections.agreement import agreement_body
from .sections.curves import drop_sweep_body, timesteps_body
from .sections.distortion import influence_body, log_volume_body, quartiles_body
from .sections.exposure import exposure_body
from .sections.findings import findings_body
from .sections.metrics import metrics_body
from .sections.report_json import report_json_body
from .sections.roc import roc_body
from .sections.settings import figure_rows, run_rows
from .sections.shift import shift_body

__all__ = ["build_html_report"]


def build_html_report(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None = None,
    protocol: str = "standard",
    folds: int | None = None,
    drop_percent: float | None = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
    manual_mask: np.ndarray | None = None,
    include_global: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    title: str | None = None,
) -> str:
    """A self-contained HTML report of one attack of a run under one protocol (works offline).

    It opens with the shift check (the blind baseline per feature group: can the files alone tell
    the folders apart, and what to do when they can) and the findings (the same
    :class:`~ldminv_core.evaluation.Evaluation` numbers as the dashboard's Findings page and
    ``report --json``; a finding on folders the files alone separate carries its caveat), then
    the metrics of every arm with the t and drop that produced them (every TPR@1%FPR with its exact
    interval and count), ROC curves (the blind baseline's dashed), curves against drop percentage
    and timestep, the distortion figures and a link saving the report JSON (a ``data:`` URL).

    Args:
        run: a finished :class:`~ldminv_core.runs.Run` or its folder.
        attack: an attack of the run.
        t: timestep (its value) of the drop-percentage curves; None = the protocol's headline t.
        protocol: "standard", "paper" or "honest"; ``folds``: the honest protocol's folds.
        drop_percent: per-sample drop percentage of the masked arm (and count of the random
            control), in [0, 100); None under ``honest`` = chosen on the other folds.
        random_seed: first seed of the random control, seed of the bootstrap and the folds.
        manual_mask: optional bool (C, h, w) keep-mask, added as the "manual" arm.
        include_global: add the "global" arm (one mean-influence ranking for all samples).
        n_boot: stratified bootstrap replicates of the 95% intervals (0 = none; default: the
            evaluation layer's ``DEFAULT_N_BOOT``, as the CLI report and the dashboard).
        title: heading of the report (default: the run folder's name).

    Returns:
        The HTML document as a string; the sections are :data:`SECTIONS` (element ids) and the
        tables carry the ids ``blind-table`` (when the blind baseline is available),
        ``findings-table``, ``run-settings-table``, ``figure-settings-table``, ``metrics-table``,
        ``quartile-table`` (``folds-table`` under honest, ``timestep-table`` and
        ``random-seeds-table`` for maskable attacks; ``agreement-counts-table``, ``agreement-table`` and
        ``who-flags-table`` when the run holds two or more attacks); the findings table's rows carry
        ``data-finding`` (the id) and, when the finding is confounded by the folders' difference,
        ``class="confounded"``; the shift headline is ``#shift-headline``, the advice
        ``#shift-advice``; the JSON link is ``a#report-json-link``.

    Raises:
        RunError (run folder), UnknownNameError (attack, t, protocol), ShapeError (manual_mask),
        LdminvError (drop_percent, random_seed, n_boot, folds).
    """
    # 1. check the arguments and evaluate the attack under the protocol
    ctx = prepare(run, attack=attack, t=t, protocol=protocol, folds=folds, drop_percent=drop_percent,
                  random_seed=random_seed, manual_mask=manual_mask, include_global=include_global, n_boot=n_boot)
    # 2. the shift check, then the findings
    parts = [section("shift", shift_body(ctx.res, ctx.fig)),
             section("findings", findings_body(ctx.res, ctx.ev, ctx.fig, ctx.curve_drop))]
    # 3. the settings: the run's, then those that produced the numbers
    parts.append(section("run-settings", kv_table(run_rows(ctx.run), table_id="run-settings-table")))
    collect_arms(ctx)
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts.append(section("figure-settings", kv_table(figure_rows(ctx, generated=generated),
                                                     table_id="figure-settings-table")))
    # 4. the metrics of every arm and their ROC curves
    parts += [section("metrics", metrics_body(ctx)), section("roc", roc_body(ctx))]
    # 5. the curves against drop percentage and timestep
    parts += [section("drop-sweep", drop_sweep_body(ctx)), section("timesteps", timesteps_body(ctx))]
    # 6. the distortion: log-volume, quartiles, mean influence
    parts += [section("log-volume", log_volume_body(ctx)), section("quartiles", quartiles_body(ctx)),
              section("influence", influence_body(ctx))]
    # 7. the agreement between the run's attacks
    parts.append(section("agreement", agreement_body(ctx)))
    # 8. the exposure list: the members most at risk, with their thumbnails
    parts.append(section("exposure", exposure_body(ctx)))
    # 9. the report JSON: a link that saves it (embedded as a data: URL), not a dump in the page
    parts.append(section("report-json", report_json_body(ctx)))
    return _page(ctx, parts, title=title, generated=generated)


def _page(ctx: ReportContext, parts: list[str], *, title: str | None, generated: str) -> str:
    """The HTML document: head with the style sheet, heading, lead line, table of contents, the
    sections."""
    run, res = ctx.run, ctx.res
    heading = title or f"Membership-leakage report: {Path(run.path).name}"
    toc = "".join(f'<li><a href="#{sid}">{esc(text)}</a></li>' for sid, text in SECTIONS.items())
    lead = (f"{esc(attack_label(ctx.attack))} · protocol {esc(res.protocol.name)} · {esc(res.baseline.t_text)}"
            + (f" · drop {esc(res.masked.drop_text)}" if res.masked is not None else "")
            + f" · {run.n_members} members / {run.n_heldout} held-out · generated {esc(generated)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{esc(heading)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(heading)}</h1>\n<p class=\"lead\">{lead}</p>\n<nav><ol>{toc}</ol></nav>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
