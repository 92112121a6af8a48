"""The metrics section of the HTML report: the metrics of every arm with their intervals and the
t / drop that produced them (every TPR@1%FPR with its exact interval and count), what the low-FPR
rates rest on, the random control per seed and, under ``honest``, every fold's choices."""
from __future__ import annotations

from collections.abc import Sequence

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import REPORTED_METRICS, ArmResult, below_chance_text
from ldminv_core.evaluation.wording import low_fpr_cautions
from ldminv_core.formatting import format_rate

from ..context import ReportContext
from ..markup import boot_text, cautions_html, esc, html_table
from ..tables import arms_table, folds_table, random_seed_table

__all__ = ["arm_notes", "metrics_body"]


def arm_notes(arms: Sequence[ArmResult]) -> str:
    """Under the metrics table: what every TPR@1%FPR rests on (how many held-out images the 1% is,
    the count behind the rate, the exact interval) and each below-chance AUROC in words."""
    notes = []
    rests = list(dict.fromkeys(a.low_fpr.rests_on() for a in arms if a.low_fpr is not None))
    if rests:
        fixed = {a.low_fpr.threshold_fixed for a in arms if a.low_fpr is not None}
        when = ("at the thresholds transferred from the other folds" if fixed == {True} else
                "at the threshold chosen on these samples (the exact interval is conditional on that choice)")
        pos = {"held-out images" if a.low_fpr.positive_class == "heldout" else "members"
               for a in arms if a.low_fpr is not None}.pop()
        notes.append(f"TPR@1%FPR rests on {'; '.join(rests)}. “flagged” counts the {pos} flagged {when}; "
                     "the exact interval is the Clopper-Pearson interval of that count, beside the bootstrap one"
                     + ("; the random row is a mean over seeds (no single count)."
                        if any(a.low_fpr is None for a in arms) else "."))
    notes += [f"{a.arm}: AUROC {format_rate(a.auroc)} is {text}" for a in arms
              if (text := below_chance_text(a.auroc, a.ci["auroc"]))]
    return (f'<p class="note" id="metrics-low-fpr">{"<br>".join(esc(n) for n in notes)}</p>' if notes else "")


def metrics_body(ctx: ReportContext) -> str:
    """The metrics section's body (``ctx.arms`` collected)."""
    run, res, arms = ctx.run, ctx.res, ctx.arms
    body = (
        f'<p class="note">{esc(attack_label(ctx.attack))}, protocol {esc(res.protocol.name)}; {run.n_members} members, '
        f"{run.n_heldout} held-out. TPR@1%FPR = {esc(res.protocol.tpr_rule)}; ASR = max over thresholds of "
        "(TPR + 1 − FPR) / 2. With few held-out samples the low-FPR metrics rest on a handful of images: "
        f"read them with their intervals. Intervals: {esc(boot_text(ctx.n_boot))}.</p>"
        + ('<p class="note" id="metrics-shifted"><b>Shifted folders:</b> these arms separate two folders that differ '
           "without the model; their AUROCs and TPRs are not evidence of membership (see the shift check).</p>"
           if res.shifted else "")
        + html_table(arms_table(arms, honest=ctx.honest, counts=True), table_id="metrics-table")
        + arm_notes(arms)
        + cautions_html(low_fpr_cautions(res.protocol, n_members=run.n_members, n_heldout=run.n_heldout,
                                         metrics_shown=REPORTED_METRICS),
                        element_id="metrics-fpr-caution")
    )
    if res.random is not None:
        body += (f'<p class="note">The random control per seed (its row above is the mean over the '
                 f"{len(res.random.seeds)} seeds):</p>"
                 + html_table(random_seed_table(res.random), table_id="random-seeds-table"))
    if ctx.honest:
        body += ("<p class=\"note\">The choices of every fold, made on the other folds only:</p>"
                 + html_table(folds_table(arms), table_id="folds-table"))
    return body
