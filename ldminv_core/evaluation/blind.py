"""The blind baseline's cross-fitted classifier (METHOD.md section 6).

A classifier that sees only model-free features of the files (:mod:`ldminv_core.blind_features`)
is fitted on the other folds and scores each fold's own samples, with the same seeded,
stratified folds as the ``honest`` protocol. Its out-of-fold scores (the member probability of a
logistic regression on standardised features; captions as TF-IDF of words fitted on the training
folds only) pool like ``cross_val_predict`` output and are measured like any arm: when they
separate members from held-out images, the two folders differ without the model, and an attack's
AUROC on them cannot be read as membership.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ..blind_features import BlindFeatures
from ..errors import LdminvError, ShapeError

__all__ = ["BlindScores", "cross_fitted_blind_scores", "ALL_GROUPS"]

#: The name of the classifier that sees every feature group at once.
ALL_GROUPS = "all"
#: Inverse L2 strength of the logistic regression (sklearn's default).
C = 1.0


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
        features: the run's :class:`~ldminv_core.blind_features.BlindFeatures` (N samples).
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
            model = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(x_tr, y[train])
            score[test] = model.predict_proba(x_te)[:, 1]
        out[name] = score
    return BlindScores(scores=out, folds=fold)
