"""The blind baseline's cross-fitted classifier (METHOD.md section 6).

A classifier that sees only model-free features of the files (:mod:`ldminv_core.data.blind_features`)
is fitted on the other folds and scores each fold's own samples, with the same seeded,
stratified folds as the ``honest`` protocol. Its out-of-fold scores (the member probability of a
logistic regression on standardised features; captions as TF-IDF of words fitted on the training
folds only) pool like ``cross_val_predict`` output and are measured like any arm: when they
separate members from held-out images, the two folders differ without the model, and an attack's
AUROC on them cannot be read as membership.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ldminv_core.data.blind_features import BlindFeatures
from ..errors import LdminvError, ShapeError
from .low_fpr import low_fpr_count, threshold_at_1fpr
from .protocols import REPORTED_METRICS, Protocol, convention_metrics, convention_metrics_resampled
from .resampling import combine_strata, percentile_interval, resample_index, verdict
from .results import BlindGroupResult, BlindResult, Finding

__all__ = ["BlindScores", "cross_fitted_blind_scores", "ALL_GROUPS", "BLIND_STRATA", "blind_strata",
           "blind_baseline_finding", "attack_vs_blind_finding", "within_blind_strata_finding",
           "evaluate_blind", "CLASSIFIER", "FittingNull", "fitting_null", "fitting_variance", "widened_interval",
           "mann_whitney_null_variance", "NULL_PERMUTATIONS", "cached_fitting_null", "null_file_name"]

#: The name of the classifier that sees every feature group at once.
ALL_GROUPS = "all"
#: Inverse L2 strength of the logistic regression (sklearn's default).
C = 1.0
#: The classifier in words, for every surface that names it.
CLASSIFIER = "logistic regression on standardised features (captions: TF-IDF of words), cross-fitted"
#: Designs up to this many columns are fitted dense with sklearn's "newton-cholesky" solver (exact
#: to its tolerance, about 15 ms on 480 x 151); wider ones (many caption words) sparse with "lbfgs".
DENSE_MAX_COLUMNS = 2000
#: Label permutations (within folds) that measure the cross-fitting's own variance: the classifier
#: is refitted on each, and the spread of the out-of-fold AUROC beyond that of a fixed score
#: widens the blind intervals (a bootstrap of fixed out-of-fold scores misses it).
NULL_PERMUTATIONS = 40
#: Features named per group as the ones that weigh most.
TOP_FEATURES = 5
#: Strata of the shift-controlled attack (pooled quintiles of the out-of-fold blind score).
BLIND_STRATA = 5
_MEMBERS_POSITIVE = Protocol()  # AUROC does not depend on the convention


@dataclass(frozen=True)
class BlindScores:
    """Out-of-fold blind scores.

    Attributes:
        scores: feature group (or ``"all"``) -> float64 (N,) member probability of each sample,
            from the model fitted on the other folds.
        folds: int64 (N,) fold of every sample.
    """

    scores: dict[str, np.ndarray]
    folds: np.ndarray


def _design(features: BlindFeatures, groups: Sequence[str], train: np.ndarray, test: np.ndarray):
    """(X_train, X_test) of the groups: dense groups standardised on the training rows; the
    ``caption`` group adds TF-IDF of the words, its vocabulary learnt from the training rows."""
    blocks_tr, blocks_te = [], []
    for g in groups:
        x = features.groups[g]
        scaler = StandardScaler().fit(x[train])
        blocks_tr.append(sparse.csr_matrix(scaler.transform(x[train])))
        blocks_te.append(sparse.csr_matrix(scaler.transform(x[test])))
        if g == "caption" and features.captions is not None:
            texts = np.asarray(features.captions, dtype=object)
            if any(t.strip() for t in texts[train]):
                tfidf = TfidfVectorizer().fit(texts[train])
                blocks_tr.append(tfidf.transform(texts[train]))
                blocks_te.append(tfidf.transform(texts[test]))
    return sparse.hstack(blocks_tr).tocsr(), sparse.hstack(blocks_te).tocsr()


def cross_fitted_blind_scores(features: BlindFeatures, labels: np.ndarray, folds: np.ndarray, *,
                              groups: Sequence[str] | None = None, seed: int = 0) -> BlindScores:
    """Out-of-fold member probabilities of the blind classifier, per feature group and for all.

    Args:
        features: the run's :class:`~ldminv_core.data.blind_features.BlindFeatures` (N samples).
        labels: (N,) 1 = member.
        folds: (N,) fold id of every sample (e.g. ``Evaluation.folds()`` under ``honest``); every
            fold's complement must hold both classes.
        groups: the feature groups to score one by one (default: every group of ``features``);
            ``"all"`` (every group together) is always added.
        seed: ``random_state`` of the logistic regression.

    Returns:
        :class:`BlindScores`.

    Raises:
        ShapeError: lengths differ. LdminvError: an unknown group, or a fold whose complement holds
            one class.
    """
    # 1. validate
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    fold = np.asarray(folds).astype(np.int64).reshape(-1)
    n = y.shape[0]
    for name, x in features.groups.items():
        if x.shape[0] != n:
            raise ShapeError(f"features.{name}: expected {n} rows (one per sample), got {x.shape[0]}")
    if fold.shape != (n,):
        raise ShapeError(f"folds: expected shape ({n},), got {fold.shape}")
    wanted = tuple(features.groups) if groups is None else tuple(groups)
    unknown = [g for g in wanted if g not in features.groups]
    if unknown:
        raise LdminvError(f"groups: {unknown} are not among the computed feature groups {tuple(features.groups)}")
    # 2. every group alone, then all together, each fitted on the other folds
    out: dict[str, np.ndarray] = {}
    for name, members in [*((g, (g,)) for g in wanted), (ALL_GROUPS, tuple(features.groups))]:
        score = np.empty(n, dtype=np.float64)
        for f in np.unique(fold):
            test = fold == f
            train = ~test
            if len(np.unique(y[train])) < 2:
                raise LdminvError(f"folds: the samples outside fold {int(f)} hold one class; the blind "
                                  "classifier needs members and held-out images to learn from")
            x_tr, x_te = _design(features, members, train, test)
            score[test] = _fit_predict(x_tr, y[train], x_te, seed)
        out[name] = score
    return BlindScores(scores=out, folds=fold)


def _fit_predict(x_tr: sparse.csr_matrix, y_tr: np.ndarray, x_te: sparse.csr_matrix, seed: int) -> np.ndarray:
    """Member probability of the test rows from the logistic regression fitted on the training rows
    (dense newton-cholesky up to :data:`DENSE_MAX_COLUMNS` columns, else sparse lbfgs)."""
    if x_tr.shape[1] <= DENSE_MAX_COLUMNS:
        model = LogisticRegression(C=C, solver="newton-cholesky", max_iter=1000, random_state=seed)
        with warnings.catch_warnings():  # a failed Newton line search falls back to lbfgs by itself
            warnings.filterwarnings("ignore", message=".*Newton solver.*resort to lbfgs", category=ConvergenceWarning)
            return model.fit(x_tr.toarray(), y_tr).predict_proba(x_te.toarray())[:, 1]
    model = LogisticRegression(C=C, max_iter=5000, random_state=seed)
    return model.fit(x_tr, y_tr).predict_proba(x_te)[:, 1]


def mann_whitney_null_variance(n_members: int, n_heldout: int) -> float:
    """Variance of the AUROC of a fixed score that does not depend on the split:
    ``(n1 + n2 + 1) / (12 n1 n2)`` (the Mann-Whitney U statistic's null variance over n1 n2)."""
    return (n_members + n_heldout + 1) / (12.0 * n_members * n_heldout)


@dataclass(frozen=True)
class FittingNull:
    """The out-of-fold AUROC (all feature groups) of the classifier refitted on labels permuted
    within every fold (each fold keeps its members and held-out counts): what cross-fitting gives
    when the files carry no membership signal.

    A bootstrap of fixed out-of-fold scores misses two things this measures: the variance of
    fitting on noisy labels (the spread beyond a fixed score's Mann-Whitney variance) and the
    bias of cross-fitting under no signal (out-of-fold AUROCs of a refitted classifier sit a little
    below 0.5). Measured on the demo's 1000 held-out images split at random 150 + 150: the
    estimates' spread across splits was 0.047 against a mean permutation spread of 0.047, their
    mean 0.485.

    Attributes:
        aurocs: (n_perm,) out-of-fold AUROC under each permutation.
        n_members, n_heldout: the split sizes.
    """

    aurocs: np.ndarray
    n_members: int
    n_heldout: int

    @property
    def permutations(self) -> int:
        return int(self.aurocs.size)

    @property
    def sd(self) -> float:
        return float(np.std(self.aurocs, ddof=1)) if self.aurocs.size > 1 else float("nan")

    @property
    def bias(self) -> float:
        """Mean null AUROC - 0.5 (0 without permutations)."""
        return float(np.mean(self.aurocs)) - 0.5 if self.aurocs.size else 0.0

    @property
    def extra_variance(self) -> float:
        """The permutation variance beyond a fixed score's, >= 0 (0 without permutations)."""
        if self.aurocs.size < 2:
            return 0.0
        return max(0.0, self.sd ** 2 - mann_whitney_null_variance(self.n_members, self.n_heldout))


def fitting_null(features: BlindFeatures, labels: np.ndarray, folds: np.ndarray, *,
                 n_perm: int = NULL_PERMUTATIONS, seed: int = 0) -> FittingNull:
    """:class:`FittingNull` of the classifier on these features and folds: ``n_perm`` label
    permutations within folds (seeded), each fitted on the other folds like the real scores."""
    y = np.asarray(labels).astype(np.int64)
    fold = np.asarray(folds).astype(np.int64)
    n1, n0 = int(y.sum()), int(y.size - y.sum())
    if n_perm < 1 or n1 == 0 or n0 == 0:
        return FittingNull(aurocs=np.zeros(0), n_members=n1, n_heldout=n0)
    rng = np.random.default_rng(seed)
    members = tuple(features.groups)
    designs = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for f in np.unique(fold):  # the designs do not depend on the labels: built once
            test = fold == f
            designs[int(f)] = (test, *_design(features, members, ~test, test))
        aurocs = []
        for _ in range(n_perm):
            yp = y.copy()
            for f in designs:
                rows = np.flatnonzero(fold == f)
                yp[rows] = rng.permutation(y[rows])
            score = np.empty(y.size, dtype=np.float64)
            for f, (test, x_tr, x_te) in designs.items():
                score[test] = _fit_predict(x_tr, yp[~test], x_te, seed)
            aurocs.append(float(_auroc(score, yp, None)[0]))
    return FittingNull(aurocs=np.asarray(aurocs, dtype=np.float64), n_members=n1, n_heldout=n0)


def null_file_name(labels: np.ndarray, folds: np.ndarray, *, n_perm: int = NULL_PERMUTATIONS, seed: int = 0) -> str:
    """The file name of a stored :class:`FittingNull` for these labels and folds
    (``blind-null-<digest>.npy``, the digest of labels, folds, permutations and seed)."""
    h = hashlib.sha256()
    for part in (np.asarray(labels, dtype=np.int64), np.asarray(folds, dtype=np.int64)):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(f"{n_perm}:{seed}:{DENSE_MAX_COLUMNS}:{C}".encode())
    return f"blind-null-{h.hexdigest()[:20]}.npy"


def cached_fitting_null(folder: str | os.PathLike | None, features: BlindFeatures, labels: np.ndarray,
                        folds: np.ndarray, *, seed: int = 0) -> FittingNull:
    """:func:`fitting_null`, read from ``folder`` (a run's ``.ldminv-cache``) when stored there for
    the same labels and folds, else computed and stored (atomically; a folder that cannot be
    written is skipped)."""
    y = np.asarray(labels).astype(np.int64)
    n1, n0 = int(y.sum()), int(y.size - y.sum())
    path = None if folder is None else Path(folder) / null_file_name(y, folds, seed=seed)
    if path is not None and path.is_file():
        try:
            aurocs = np.load(path, allow_pickle=False)
            if aurocs.shape == (NULL_PERMUTATIONS,) and np.isfinite(aurocs).all():
                return FittingNull(aurocs=aurocs.astype(np.float64), n_members=n1, n_heldout=n0)
        except (OSError, ValueError):
            pass  # damaged: computed again
    null = fitting_null(features, y, folds, seed=seed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, null.aurocs)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only run folder: computed again next time
    return null


def fitting_variance(features: BlindFeatures, labels: np.ndarray, folds: np.ndarray, *,
                     n_perm: int = NULL_PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """(extra variance >= 0, permutation standard deviation) of :func:`fitting_null`."""
    null = fitting_null(features, labels, folds, n_perm=n_perm, seed=seed)
    return null.extra_variance, null.sd


def widened_interval(estimate: float, interval: tuple[float, float], reps: np.ndarray | None,
                     extra_variance: float, *, bounds: tuple[float, float] = (-np.inf, np.inf),
                     shift: float = 0.0) -> tuple[float, float]:
    """``interval`` (a bootstrap percentile interval of ``estimate``, from the replicates ``reps``)
    widened about the estimate so that its variance becomes the bootstrap's plus
    ``extra_variance`` (each side scaled by ``sqrt(1 + extra / var(reps))``), then extended by
    ``shift`` (a bias correction) on the side it points to, so that the interval covers both the
    estimate and the bias-corrected one; clipped to ``bounds``."""
    if reps is None or not np.isfinite(estimate):
        return interval
    var = float(np.nanvar(reps))
    k = np.sqrt(1.0 + extra_variance / var) if (var > 0 and extra_variance > 0) else 1.0
    lo, hi = interval

    def clip(v: float) -> float:
        return float(min(bounds[1], max(bounds[0], v)))
    lo_w, hi_w = estimate - k * (estimate - lo), estimate + k * (hi - estimate)
    return clip(min(lo_w, lo_w + shift)), clip(max(hi_w, hi_w + shift))


def _auroc(score: np.ndarray, labels: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """AUROC (members positive) of ``score`` (N,) on the data (index None: shape (1,)) or on every
    replicate of ``index`` (B, N)."""
    if index is None:
        return np.atleast_1d(convention_metrics(score, labels, _MEMBERS_POSITIVE)["auroc"])
    return convention_metrics_resampled(score, labels, index, _MEMBERS_POSITIVE)["auroc"]


def _finding(fid: str, est: float, reps: np.ndarray | None, level: float, details: dict, statement,
             null: "FittingNull | None" = None, bounds: tuple[float, float] = (-1.0, 1.0),
             sign: float = 1.0) -> Finding:
    ci = percentile_interval(reps, level=level) if reps is not None else (float("nan"), float("nan"))
    if null is not None:  # the blind AUROC enters with ``sign``: its bias correction moves the interval
        ci = widened_interval(est, ci, reps, null.extra_variance, bounds=bounds, shift=-sign * null.bias)
    v = verdict(ci) if np.isfinite(est) else "undefined"
    return Finding(id=fid, metric="auroc", estimate=float(est), ci=ci, verdict=v, statement=statement(est, ci, v),
                   details=details)


_GROUP_SHORT = {"meta": "format and metadata", "pixels": "pixels", "caption": "captions",
                "encoder": "image-model embeddings"}


def _group_list(groups: Sequence[str]) -> str:
    """"format and metadata, pixels and captions": the feature groups in words."""
    words = [_GROUP_SHORT.get(g, g) for g in groups if g != ALL_GROUPS]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else "features"


def blind_baseline_finding(blind_score: np.ndarray, labels: np.ndarray, index: np.ndarray | None, *,
                           level: float = 0.95, groups: Sequence[str] = ("meta", "pixels", "caption"),
                           null: FittingNull | None = None) -> Finding:
    """``blind_baseline``: AUROC of the out-of-fold blind scores - 0.5.

    Args:
        blind_score: (N,) out-of-fold blind scores (higher = member).
        labels: (N,) 1 = member.
        index: (B, N) bootstrap design (e.g. stratified by split and fold), or None (no interval).
        level: interval level.
        null: the cross-fitting's :class:`FittingNull`: its extra variance is added to the
            bootstrap's and its bias corrected (:func:`widened_interval`); None: the bootstrap alone.

    Returns:
        The finding; "supported" = the folders can be told apart without the model.
    """
    y = np.asarray(labels).astype(np.int8)
    est = float(_auroc(blind_score, y, None)[0]) - 0.5
    reps = None if index is None else _auroc(blind_score, y, index) - 0.5

    def statement(e: float, ci: tuple[float, float], v: str) -> str:
        meaning = {
            "supported": "the two folders can be told apart from the files alone, without the model: an attack's "
                         "AUROC on them may be distribution shift, not membership",
            "contradicted": "the blind classifier does worse than chance",
            "inconclusive": "the files alone do not tell the two folders apart on this run",
            "undefined": "undefined on this run",
        }[v]
        return (f"Blind baseline (a classifier of the files' {_group_list(groups)}, cross-fitted, never "
                f"seeing the model): AUROC {e + 0.5:.3f}, {e:+.3f} over chance, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; "
                f"{v}: {meaning}.")
    return _finding("blind_baseline", est, reps, level, {"blind_auroc": est + 0.5}, statement, null,
                    bounds=(-0.5, 0.5))


def attack_vs_blind_finding(attack_score: np.ndarray, blind_score: np.ndarray, labels: np.ndarray,
                            index: np.ndarray | None, *, level: float = 0.95, context: str = "",
                            null: FittingNull | None = None) -> Finding:
    """``attack_vs_blind``: attack AUROC - blind AUROC, paired (both on every replicate of ``index``).

    Args:
        attack_score, blind_score: (N,) scores of the same samples (higher = member).
        labels: (N,) 1 = member. index: (B, N) bootstrap design or None. context: the attack,
            protocol and t, for the statement. null: the blind scores' :class:`FittingNull` (the
            attack's scores are fixed): its variance added to the paired bootstrap's, its bias
            corrected.
    """
    y = np.asarray(labels).astype(np.int8)
    a, b = float(_auroc(attack_score, y, None)[0]), float(_auroc(blind_score, y, None)[0])
    reps = None if index is None else _auroc(attack_score, y, index) - _auroc(blind_score, y, index)

    def statement(e: float, ci: tuple[float, float], v: str) -> str:
        meaning = {
            "supported": "the attack separates the folders better than the files alone do",
            "contradicted": "the files alone separate the folders better than the attack: its AUROC is no "
                            "evidence of membership",
            "inconclusive": "the attack does not separate the folders clearly better than the files alone",
            "undefined": "undefined on this run",
        }[v]
        return (f"Attack AUROC {a:.3f} against the blind baseline's {b:.3f} ({context}): difference {e:+.3f}, "
                f"95% paired CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; {v}: {meaning}.")
    return _finding("attack_vs_blind", a - b, reps, level, {"attack_auroc": a, "blind_auroc": b}, statement,
                    null, sign=-1.0)


def blind_strata(blind_score: np.ndarray, *, n_strata: int = BLIND_STRATA) -> np.ndarray:
    """Stratum of every sample, int64 (N,) in 0..n_strata-1: the samples sorted by their out-of-fold
    blind score (stable sort) and split into near-equal parts (``numpy.array_split``)."""
    s = np.asarray(blind_score, dtype=np.float64)
    out = np.empty(s.shape[0], dtype=np.int64)
    for k, rows in enumerate(np.array_split(np.argsort(s, kind="stable"), n_strata)):
        out[rows] = k
    return out


#: A stratum whose members and held-out images differ in blind score at this two-sided level
#: (Mann-Whitney U) is left out of ``attack_within_blind_strata``.
STRATUM_ALPHA = 0.05


def _still_separated(member_scores: np.ndarray, heldout_scores: np.ndarray) -> bool:
    """True when the blind scores of a stratum's members and held-out images differ: no overlap
    at all, or a two-sided Mann-Whitney U test at :data:`STRATUM_ALPHA` (the strata are quintiles
    of the score, so with well-separated folders the middle one still spans the whole range)."""
    if member_scores.min() > heldout_scores.max() or member_scores.max() < heldout_scores.min():
        return True
    if member_scores.size < 2 or heldout_scores.size < 2:
        return False
    return bool(stats.mannwhitneyu(member_scores, heldout_scores, alternative="two-sided").pvalue < STRATUM_ALPHA)


def within_blind_strata_finding(attack_score: np.ndarray, blind_score: np.ndarray, labels: np.ndarray, *,
                                n_boot: int, seed: int = 0, level: float = 0.95, context: str = "") -> Finding:
    """``attack_within_blind_strata``: the attack's AUROC within strata of equal blind score.

    The samples are cut into :data:`BLIND_STRATA` strata by their out-of-fold blind score
    (:func:`blind_strata`); the attack's AUROC is computed within every stratum that holds both
    splits, and the estimate is their size-weighted mean - 0.5, with a bootstrap interval
    resampling within split x stratum (``n_boot`` replicates, 0 = none). A stratum with one split
    only is named in the details and left out; so is a stratum whose members and held-out images
    the blind score still separates (no overlap of their blind scores, or a Mann-Whitney U test
    at :data:`STRATUM_ALPHA`): it does not hold the folders' difference fixed. When none remains the estimate is NaN ("undefined") and
    the statement says that no membership claim can be made.
    """
    y = np.asarray(labels).astype(np.int8)
    b = np.asarray(blind_score, dtype=np.float64)
    strata = blind_strata(b)
    kept, dropped, separated = [], [], []
    for k in range(BLIND_STRATA):
        rows = strata == k
        if not 0 < y[rows].sum() < rows.sum():
            dropped.append(k + 1)
        elif _still_separated(b[rows & (y == 1)], b[rows & (y == 0)]):
            # both splits, but the blind score still separates them within the stratum: the files
            # tell these images apart too, so the stratum does not hold the folders' difference fixed
            separated.append(k + 1)
        else:
            kept.append(k)
    index = (resample_index(combine_strata(y.astype(np.int64), strata), n_boot=n_boot, seed=seed)
             if n_boot else None)

    def weighted(idx: np.ndarray | None) -> np.ndarray:
        total = sum(int((strata == k).sum()) for k in kept)
        acc = 0.0
        for k in kept:
            rows = np.flatnonzero(strata == k)
            if idx is None:
                auc = _auroc(attack_score[rows], y[rows], None)
            else:  # the design keeps every replicate's column inside its stratum: restrict to it
                pos = np.full(y.size, -1, dtype=np.int64)
                pos[rows] = np.arange(rows.size)
                auc = _auroc(np.asarray(attack_score, dtype=np.float64)[rows], y[rows], pos[idx[:, rows]])
            acc = acc + auc * rows.size / total
        return np.atleast_1d(acc)

    est = float(weighted(None)[0]) - 0.5 if kept else float("nan")
    reps = weighted(index) - 0.5 if (kept and index is not None) else None

    def statement(e: float, ci: tuple[float, float], v: str) -> str:
        if not kept:
            return ("Attack within blind strata: no stratum of equal blind score holds members and held-out images "
                    "that the files alone cannot tell apart (one split only: "
                    f"{dropped or 'none'}; separated by the blind score within the stratum: {separated or 'none'}): "
                    "the folders are separable without the model, and no membership claim can be made on this run.")
        left = f"; strata left out (one split only): {dropped}" if dropped else ""
        left += (f"; strata left out (the blind score still separates the splits within them): {separated}"
                 if separated else "")
        meaning = {
            "supported": "among images the files alone cannot tell apart, the attack still identifies members",
            "contradicted": "within strata of equal blind score the attack does worse than chance",
            "inconclusive": "once the folders' difference is held fixed, the attack shows no clear membership signal",
            "undefined": "undefined on this run",
        }[v]
        strata_words = "stratum" if len(kept) == 1 else "strata"
        return (f"Attack AUROC within {len(kept)} {strata_words} of equal blind score ({context}): size-weighted mean "
                f"{e + 0.5:.3f}, {e:+.3f} over chance, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]{left}; {v}: {meaning}.")
    return _finding("attack_within_blind_strata", est, reps, level,
                    {"strata_kept": [k + 1 for k in kept], "strata_left_out": dropped,
                     "strata_separated": separated}, statement)


def _top_features(features: BlindFeatures, group: str, labels: np.ndarray, seed: int) -> tuple[int, tuple]:
    """(number of columns, the :data:`TOP_FEATURES` largest standardised coefficients as (name,
    coefficient)) of the group's classifier fitted on every sample (descriptive only)."""
    members = tuple(features.groups) if group == ALL_GROUPS else (group,)
    everyone = np.ones(labels.shape[0], dtype=bool)
    x, _ = _design(features, members, everyone, everyone)
    names: list[str] = []
    for g in members:
        names += [f"{g}:{v}" for v in features.names[g]]
        if g == "caption" and features.captions is not None and any(t.strip() for t in features.captions):
            names += [f"caption word:{w}" for w in TfidfVectorizer().fit(features.captions).get_feature_names_out()]
    if len(np.unique(labels)) < 2 or x.shape[1] != len(names):
        return x.shape[1], ()
    if x.shape[1] <= DENSE_MAX_COLUMNS:
        coef = LogisticRegression(C=C, solver="newton-cholesky", max_iter=1000).fit(x.toarray(), labels).coef_[0]
    else:
        coef = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(x, labels).coef_[0]
    order = np.argsort(-np.abs(coef), kind="stable")[:TOP_FEATURES]
    return x.shape[1], tuple((names[i], float(coef[i])) for i in order if abs(coef[i]) > 1e-6)


def evaluate_blind(features: BlindFeatures, labels: np.ndarray, folds: np.ndarray, protocol: Protocol,
                   design: np.ndarray | None, *, level: float = 0.95, seed: int = 0,
                   fold_seed: int = 0, scores: BlindScores | None = None,
                   null: FittingNull | None = None) -> BlindResult:
    """The blind baseline of a run under a protocol: out-of-fold scores per feature group and for
    all (:func:`cross_fitted_blind_scores` on ``folds``), measured like any arm.

    Args:
        features: the run's blind features (N samples).
        labels: (N,) 1 = member.
        folds: (N,) the ``honest`` protocol's fold of every sample (the cross-fitting folds).
        protocol: its ROC convention, and for ``honest`` the TPR@1%FPR at thresholds transferred
            between folds (each fold's threshold from the other folds' out-of-fold scores).
        design: (B, N) bootstrap design (stratified by split, and by fold under ``honest``), or
            None (no intervals).
        level: interval level. seed: the classifier's ``random_state``. fold_seed: the folds'
            seed (recorded).
        scores, null: the cross-fitted scores and the :class:`FittingNull` of these features,
            labels and folds when already computed (they do not depend on the protocol).

    Every AUROC interval (and the ``blind_baseline`` finding's) is the bootstrap's, widened by
    the cross-fitting's own variance and extended by its bias under no signal (:class:`FittingNull`).

    Returns:
        :class:`~.results.BlindResult` with ``finding`` = ``blind_baseline`` on all groups.
    """
    with threadpool_limits(limits=1, user_api="blas"):  # small fits: BLAS threads only contend (10x slower under load)
        return _evaluate_blind(features, labels, folds, protocol, design, level=level, seed=seed, fold_seed=fold_seed,
                               scores=scores, null=null)


def _evaluate_blind(features: BlindFeatures, labels: np.ndarray, folds: np.ndarray, protocol: Protocol,
                    design: np.ndarray | None, *, level: float, seed: int, fold_seed: int,
                    scores: BlindScores | None, null: FittingNull | None) -> BlindResult:
    y = np.asarray(labels).astype(np.int8)
    fold = np.asarray(folds).astype(np.int64)
    # 1. out-of-fold scores of every group and of all together, and the cross-fitting's null
    blind = scores if scores is not None else cross_fitted_blind_scores(features, y, fold, seed=seed)
    if design is None:
        null = None
    elif null is None:
        null = fitting_null(features, y, fold, seed=seed)
    # 2. every group measured like an arm
    honest = protocol.transfers_thresholds  # TPR realised with thresholds from the other folds
    members, heldout = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = []
    for group, score in blind.scores.items():
        point = {m: float(v[0]) for m, v in convention_metrics(score[None, :], y, protocol).items()}
        reps = convention_metrics_resampled(score, y, design, protocol) if design is not None else None
        decisions = None
        realised = None
        if honest:
            decisions = np.zeros(y.size, dtype=bool)
            for f in np.unique(fold):
                own = fold == f
                decisions[own] = score[own] >= threshold_at_1fpr(score[~own], y[~own])
            point["tpr_at_1fpr"] = float(decisions[members].mean())
            realised = float(decisions[heldout].mean())
            if reps is not None:
                picked = design[:, members]
                reps["tpr_at_1fpr"] = decisions[picked].mean(axis=1)
        ci = {m: percentile_interval(reps[m], level=level) if reps is not None else (float("nan"), float("nan"))
              for m in REPORTED_METRICS}
        if reps is not None and null is not None:  # the bootstrap's variance plus the cross-fitting's own, bias corrected
            ci["auroc"] = widened_interval(point["auroc"], ci["auroc"], reps["auroc"], null.extra_variance,
                                           bounds=(0.0, 1.0), shift=-null.bias)
        n_features, top = _top_features(features, group, y, seed)
        v = verdict((ci["auroc"][0] - 0.5, ci["auroc"][1] - 0.5)) if reps is not None else "undefined"
        out.append(BlindGroupResult(
            group=group, n_features=n_features, auroc=point["auroc"], tpr_at_1fpr=point["tpr_at_1fpr"], ci=ci,
            low_fpr=low_fpr_count(score, y, protocol, decisions=decisions, level=level), verdict=v,
            top_features=top, realised_fpr_at_1fpr=realised))
    # 3. the finding on all groups
    finding = blind_baseline_finding(blind.scores[ALL_GROUPS], y, design, level=level, groups=tuple(features.groups),
                                     null=null)
    return BlindResult(available=True, classifier=CLASSIFIER, folds=int(np.unique(fold).size),
                       fold_seed=int(fold_seed), groups=tuple(out), encoder=features.encoder,
                       fitting_variance=0.0 if null is None else null.extra_variance,
                       fitting_sd=float("nan") if null is None else null.sd,
                       fitting_bias=0.0 if null is None else null.bias,
                       fitting_permutations=0 if null is None else null.permutations, finding=finding,
                       scores=dict(blind.scores))
