"""The blind baseline's features and cross-fitted classifier (METHOD.md section 6): features read
from real image files, out-of-fold scores equal to sklearn's own cross-fitting with the same folds,
and folders that differ only in format or brightness are told apart without any model, while
folders drawn alike are not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import PredefinedSplit, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldminv_core.data.blind_features import blind_features, jpeg_quality
from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.blind import (attack_vs_blind_finding, blind_baseline_finding, blind_strata,
                                         cross_fitted_blind_scores, within_blind_strata_finding)
from ldminv_core.evaluation.resampling import resample_index
from synthetic_runs import write_run


def write_images(folder: Path, n: int, *, seed: int, fmt: str = "PNG", brightness: float = 0.0,
                 quality: int = 90) -> list[Path]:
    """n noisy RGB images of random sizes; ``brightness`` shifts every pixel."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = rng.integers(24, 40, size=2)
        pixels = np.clip(rng.normal(120 + brightness, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        Image.fromarray(pixels, mode="RGB").save(path, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
        paths.append(path)
    return paths


def folds_of(labels: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    out = np.zeros(labels.size, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels)):
        out[test] = f
    return out


def two_folders(tmp_path: Path, **held_kw) -> tuple[list[Path], np.ndarray]:
    members = write_images(tmp_path / "members", 40, seed=1)
    heldout = write_images(tmp_path / "heldout", 40, seed=2, **held_kw)
    return members + heldout, np.r_[np.ones(40, dtype=np.int64), np.zeros(40, dtype=np.int64)]


def test_features_are_read_from_the_files(tmp_path):
    paths = write_images(tmp_path / "a", 3, seed=0) + write_images(tmp_path / "b", 2, seed=0, fmt="JPEG", quality=75)
    feats = blind_features(paths, captions=["a red shoe", "", "two words", "x", None])
    meta, names = feats.groups["meta"], feats.names["meta"]
    assert meta.shape == (5, len(names)) and feats.groups["pixels"].shape[0] == 5
    col = {n: i for i, n in enumerate(names)}
    np.testing.assert_array_equal(meta[:, col["format_png"]], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(meta[:, col["format_jpeg"]], [0, 0, 0, 1, 1])
    with Image.open(paths[3]) as im:
        w, h = im.size
        assert jpeg_quality(im) == 75  # Pillow writes the IJG tables
    assert meta[3, col["log_width"]] == pytest.approx(np.log(w)) and meta[3, col["log_height"]] == pytest.approx(np.log(h))
    assert meta[3, col["bytes_per_pixel"]] == pytest.approx(paths[3].stat().st_size / (w * h))
    assert (meta[:3, col["jpeg_quality"]] == 0).all()
    np.testing.assert_array_equal(feats.groups["caption"][:, 0], [3, 0, 2, 1, 0])
    with Image.open(paths[0]) as im:
        rgb = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float64) / 255
    px = {n: i for i, n in enumerate(feats.names["pixels"])}
    assert feats.groups["pixels"][0, px["mean_g"]] == pytest.approx(rgb[..., 1].mean())
    with pytest.raises(LdminvError, match="captions"):
        blind_features(paths, captions=["one"])
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"plain text")
    with pytest.raises(LdminvError, match="not_an_image.png"):
        blind_features([bad])


def test_out_of_fold_scores_equal_sklearn_cross_fitting(tmp_path):
    paths, labels = two_folders(tmp_path, brightness=8.0)
    feats = blind_features(paths)
    folds = folds_of(labels)
    got = cross_fitted_blind_scores(feats, labels, folds, seed=0)
    assert set(got.scores) == {"meta", "pixels", "all"}
    for group, x in (("pixels", feats.groups["pixels"]),
                     ("all", np.hstack([feats.groups["meta"], feats.groups["pixels"]]))):
        model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=0))
        want = cross_val_predict(model, x, labels, cv=PredefinedSplit(folds), method="predict_proba")[:, 1]
        np.testing.assert_allclose(got.scores[group], want, atol=1e-6)


def test_caption_words_are_learnt_within_folds(tmp_path):
    paths, labels = two_folders(tmp_path)
    captions = [f"a photo of item {i}" if y else f"studio shot number {i}" for i, y in enumerate(labels)]
    feats = blind_features(paths, captions=captions)
    folds = folds_of(labels)
    got = cross_fitted_blind_scores(feats, labels, folds, groups=["caption"])
    assert roc_auc_score(labels, got.scores["caption"]) > 0.95  # caption style alone gives the folders away
    # the oracle: TF-IDF vocabulary and scaling learnt on the other folds only
    want = np.empty(labels.size)
    texts = np.asarray(captions, dtype=object)
    words = feats.groups["caption"]
    for f in np.unique(folds):
        te, tr = folds == f, folds != f
        tfidf = TfidfVectorizer().fit(texts[tr])
        sc = StandardScaler().fit(words[tr])
        x_tr = sparse.hstack([sparse.csr_matrix(sc.transform(words[tr])), tfidf.transform(texts[tr])]).tocsr()
        x_te = sparse.hstack([sparse.csr_matrix(sc.transform(words[te])), tfidf.transform(texts[te])]).tocsr()
        want[te] = LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=0).fit(x_tr, labels[tr]).predict_proba(x_te)[:, 1]
    np.testing.assert_allclose(got.scores["caption"], want, atol=1e-6)


@pytest.mark.parametrize("held_kw,group", [({"fmt": "JPEG", "quality": 70}, "meta"), ({"brightness": 25.0}, "pixels")])
def test_folders_that_differ_without_the_model_are_told_apart(tmp_path, held_kw, group):
    paths, labels = two_folders(tmp_path, **held_kw)
    got = cross_fitted_blind_scores(blind_features(paths), labels, folds_of(labels))
    assert roc_auc_score(labels, got.scores[group]) > 0.9
    assert roc_auc_score(labels, got.scores["all"]) > 0.9


def test_folders_drawn_alike_are_not_told_apart(tmp_path):
    paths, labels = two_folders(tmp_path)  # members and held-out from the same generator
    aurocs = [roc_auc_score(labels, cross_fitted_blind_scores(blind_features(paths), labels,
                                                              folds_of(labels, seed=s)).scores["all"])
              for s in range(3)]
    assert abs(np.mean(aurocs) - 0.5) < 0.15, aurocs


def test_errors_name_the_argument(tmp_path):
    paths, labels = two_folders(tmp_path)
    feats = blind_features(paths[:10] + paths[-10:])
    lab = np.r_[np.ones(10), np.zeros(10)]
    with pytest.raises(LdminvError, match="groups"):
        cross_fitted_blind_scores(feats, lab, folds_of(lab), groups=["encoder"])
    with pytest.raises(LdminvError, match="fold 0"):
        cross_fitted_blind_scores(feats, lab, np.r_[np.zeros(10), np.ones(10)].astype(int))


def test_blind_findings_against_sklearn():
    """The three findings of METHOD.md section 6 on scores with a known structure: the estimates equal
    sklearn's AUROCs, the interval of the paired difference is of the paired replicates, strata with
    one split are left out and named."""
    rng = np.random.default_rng(7)
    n = 200
    labels = np.r_[np.ones(n // 2, dtype=np.int64), np.zeros(n // 2, dtype=np.int64)]
    shift = rng.normal(size=n) + 1.2 * labels  # the folders differ: the blind score sees it
    attack = shift + 0.2 * rng.normal(size=n)  # an attack that reads the same difference
    index = resample_index(labels, n_boot=300, seed=0)

    f = blind_baseline_finding(shift, labels, index)
    assert f.id == "blind_baseline" and f.estimate == pytest.approx(roc_auc_score(labels, shift) - 0.5, abs=1e-12)
    assert f.verdict == "supported" and "without the model" in f.statement

    g = attack_vs_blind_finding(attack, shift, labels, index, context="SimA, standard protocol, t = 0")
    assert g.estimate == pytest.approx(roc_auc_score(labels, attack) - roc_auc_score(labels, shift), abs=1e-12)
    paired = [roc_auc_score(labels, attack[r]) - roc_auc_score(labels, shift[r]) for r in index[:50]]
    unpaired_spread = np.std([roc_auc_score(labels, attack[r]) for r in index[:50]])
    assert np.std(paired) < unpaired_spread  # pairing removes the shared variation
    assert g.ci[0] <= g.estimate <= g.ci[1]

    h = within_blind_strata_finding(attack, shift, labels, n_boot=300, level=0.95, context="SimA")
    strata = blind_strata(shift)
    want, total = 0.0, 0
    for k in range(5):
        rows = strata == k
        if 0 < labels[rows].sum() < rows.sum():
            want += roc_auc_score(labels[rows], attack[rows]) * rows.sum()
            total += rows.sum()
    assert h.estimate == pytest.approx(want / total - 0.5, abs=1e-12)
    assert h.estimate < g.details["attack_auroc"] - 0.5  # holding the shift fixed removes most of the signal

    # folders told apart perfectly by the files: every stratum holds one split, no membership claim
    lab = np.r_[np.ones(120, dtype=np.int64), np.zeros(80, dtype=np.int64)]  # the 40-image strata split at 80
    perfect = lab + 0.01 * rng.random(n)
    none = within_blind_strata_finding(attack, perfect, lab, n_boot=100)
    assert none.verdict == "undefined" and np.isnan(none.estimate) and "no membership claim" in none.statement
    assert none.details["strata_left_out"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_evaluation_blind_findings_on_a_run(tmp_path, protocol):
    """Evaluation.blind_findings on a run whose held-out images are brighter files: the blind
    baseline is supported, attack_vs_blind pairs the attack's baseline arm (as the protocol scores
    it) with the blind scores, and the blind folds are the honest protocol's."""
    rng = np.random.default_rng(3)
    n = 80
    labels = np.r_[np.ones(40, dtype=np.int64), np.zeros(40, dtype=np.int64)]
    terms = rng.exponential(1.0, size=(n, 2, 2, 3, 3)).astype(np.float32)
    terms[labels == 1] *= 0.8
    run = write_run(tmp_path / "run", terms=terms, influence=rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                    log_volume=rng.normal(size=n), labels=labels, timesteps=[0, 10])
    for path, y in zip(run.samples["path"], labels):
        pixels = np.clip(rng.normal(110 + 30 * (1 - y), 30, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="RGB").save(path)
    ev = Evaluation(run, "sima", protocol, n_boot=200)
    folds = ev.blind_folds()
    np.testing.assert_array_equal(folds, Evaluation(run, "sima", "honest", n_boot=0).folds())
    blind = cross_fitted_blind_scores(blind_features(list(run.samples["path"])), labels, folds)
    base, vs, within = ev.blind_findings(blind)
    assert (base.id, vs.id, within.id) == ("blind_baseline", "attack_vs_blind", "attack_within_blind_strata")
    assert base.verdict == "supported"
    attack = ev.scores("baseline")
    assert vs.estimate == pytest.approx(roc_auc_score(labels, attack) - roc_auc_score(labels, blind.scores["all"]),
                                        abs=1e-12)
    assert protocol in vs.statement
    with pytest.raises(LdminvError, match="group"):
        ev.blind_findings(blind, group="encoder")


def _old_run_with_images(tmp_path: Path, *, shift: float) -> tuple:
    """A run written without the "blind" stage (as before it existed) whose image files exist;
    the held-out files are ``shift`` grey levels brighter."""
    rng = np.random.default_rng(5)
    n = 80
    labels = np.r_[np.ones(40, dtype=np.int64), np.zeros(40, dtype=np.int64)]
    terms = rng.exponential(1.0, size=(n, 2, 2, 3, 3)).astype(np.float32)
    run = write_run(tmp_path / "run", terms=terms, influence=rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                    log_volume=rng.normal(size=n), labels=labels, timesteps=[0, 10])
    for path, y in zip(run.samples["path"], labels):
        pixels = np.clip(rng.normal(110 + shift * (1 - y), 30, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="RGB").save(path)
    return run, labels


@pytest.mark.slow
def test_an_old_run_gets_its_blind_baseline_from_the_image_paths(tmp_path):
    """A run analysed before the blind stage existed: the features are computed from its image
    paths, kept in .ldminv-cache, and the evaluation's blind AUROC is sklearn's on the same
    out-of-fold scores; every membership / geometry finding then carries the shift caveat."""
    from ldminv_core.data.blind_features import BLIND_FILE, read_blind_features
    from ldminv_core.runs import CACHE_DIR, Run

    run, labels = _old_run_with_images(tmp_path, shift=40.0)
    assert "blind" not in run.stages_done
    ev = Evaluation(run, "sima", "honest", n_boot=200)
    blind = ev.blind()
    assert blind.available and blind.separable and "pixels" in blind.separating_groups
    cached = run.path / CACHE_DIR / BLIND_FILE
    assert cached.is_file()
    np.testing.assert_array_equal(read_blind_features(cached, n=80).groups["pixels"],
                                  blind_features(list(run.samples["path"])).groups["pixels"])
    for g in blind.groups:
        assert g.auroc == pytest.approx(roc_auc_score(labels, blind.scores[g.group]), abs=1e-12)
    findings = ev.findings()
    assert [f.id for f in findings[:3]] == ["blind_baseline", "attack_vs_blind", "attack_within_blind_strata"]
    rest = findings[3:]
    assert rest and all(f.confounded and "distribution shift" in f.caveat for f in rest)
    assert all("as the paper reports" not in f.statement for f in findings)
    # another evaluation of the same opened run shares the blind result (computed once per run)
    assert Evaluation(run, "sima", "honest", n_boot=200).blind() is blind
    # a fresh open reads the cached features back: same scores
    again = Evaluation(Run.open(run.path), "sima", "honest", n_boot=200).blind()
    np.testing.assert_array_equal(again.scores["all"], blind.scores["all"])


@pytest.mark.slow
def test_folders_alike_leave_the_findings_unqualified(tmp_path):
    run, _ = _old_run_with_images(tmp_path, shift=0.0)
    ev = Evaluation(run, "sima", "standard", n_boot=200)
    b = ev.blind()
    assert b.available and not b.separable
    lo, hi = b.group("all").ci["auroc"]
    assert lo <= 0.5 <= hi
    assert not any(f.caveat for f in ev.findings())


def test_missing_images_make_the_blind_baseline_unavailable_with_the_reason(tmp_path):
    run, _ = _old_run_with_images(tmp_path, shift=40.0)
    for path in list(run.samples["path"])[:3]:
        Path(path).unlink()
    ev = Evaluation(run, "sima", "standard", n_boot=50)
    b = ev.blind()
    assert not b.available and "3 of 80 image files" in b.reason and "missing" in b.reason
    assert [f.id for f in ev.findings()][0] == "distortion_quartiles"  # no blind findings, no caveats
    assert not any(f.caveat for f in ev.findings())


def test_a_stratum_the_blind_score_still_separates_is_left_out():
    """With perfectly separating blind scores the middle quintile holds both splits, yet the
    files still tell its images apart: it is left out (named), and no membership claim remains,
    even for an attack that separates that stratum's images."""
    lab = np.r_[np.ones(100, dtype=np.int8), np.zeros(100, dtype=np.int8)]
    blind = np.r_[np.linspace(0.6, 1.0, 100), np.linspace(0.0, 0.4, 100)]
    strata = blind_strata(blind)
    middle = strata == 2
    assert 0 < lab[middle].sum() < middle.sum()  # both splits in the middle stratum
    attack = lab + np.random.default_rng(0).normal(0, 0.3, 200)  # a strong attack
    f = within_blind_strata_finding(attack, blind, lab, n_boot=50)
    assert f.verdict == "undefined" and f.details["strata_separated"] == [3]
    assert f.details["strata_left_out"] == [1, 2, 4, 5] and "no membership claim" in f.statement
    # a little overlap is not enough: the stratum's blind scores still differ (Mann-Whitney)
    blind1 = blind.copy()
    blind1[np.flatnonzero(middle & (lab == 1))[:3]] = blind[middle & (lab == 0)].min()
    assert 3 in within_blind_strata_finding(attack, blind1, lab, n_boot=0).details["strata_separated"]
    # members and held-out images mixed within the stratum: kept, and the AUROC is the stratum's own
    blind2 = blind.copy()
    blind2[middle] = np.random.default_rng(1).uniform(0.45, 0.55, int(middle.sum()))
    f2 = within_blind_strata_finding(attack, blind2, lab, n_boot=0)
    kept = f2.details["strata_kept"]
    assert kept == [3] and f2.details["strata_separated"] == []
    rows = [np.flatnonzero(blind_strata(blind2) == k - 1) for k in kept]
    expect = sum(roc_auc_score(lab[r], attack[r]) * r.size for r in rows) / sum(r.size for r in rows) - 0.5
    assert f2.estimate == pytest.approx(expect, abs=1e-12)


@pytest.mark.slow
def test_mann_whitney_null_variance_matches_permuted_aurocs():
    from ldminv_core.evaluation.blind import mann_whitney_null_variance

    rng = np.random.default_rng(0)
    score = rng.normal(size=50)
    lab = np.r_[np.ones(20, dtype=int), np.zeros(30, dtype=int)]
    aurocs = [roc_auc_score(rng.permutation(lab), score) for _ in range(3000)]
    assert np.var(aurocs) == pytest.approx(mann_whitney_null_variance(20, 30), rel=0.08)


def test_fitting_variance_is_the_permutation_spread_of_refitted_out_of_fold_aurocs():
    """The cross-fitting's own variance: labels permuted within folds (the same draws), the
    classifier refitted per fold with sklearn's pipeline, the out-of-fold AUROC's spread minus
    a fixed score's Mann-Whitney variance."""
    from ldminv_core.data.blind_features import BlindFeatures
    from ldminv_core.evaluation.blind import fitting_variance, mann_whitney_null_variance

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 12))
    feats = BlindFeatures(groups={"pixels": x}, names={"pixels": tuple(f"p{j}" for j in range(12))})
    lab = np.r_[np.ones(30, dtype=int), np.zeros(30, dtype=int)]
    folds = folds_of(lab)
    extra, sd = fitting_variance(feats, lab, folds, n_perm=6, seed=4)
    draw = np.random.default_rng(4)
    aurocs = []
    for _ in range(6):
        yp = lab.copy()
        for f in np.unique(folds):
            rows = np.flatnonzero(folds == f)
            yp[rows] = draw.permutation(lab[rows])
        model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=1000))
        oof = cross_val_predict(model, x, yp, cv=PredefinedSplit(folds), method="predict_proba")[:, 1]
        aurocs.append(roc_auc_score(yp, oof))
    assert sd == pytest.approx(np.std(aurocs, ddof=1), abs=1e-6)
    assert extra == pytest.approx(max(0.0, sd ** 2 - mann_whitney_null_variance(30, 30)), abs=1e-12)


@pytest.mark.slow
def test_blind_intervals_add_the_cross_fitting_variance(tmp_path):
    """Every blind AUROC interval is the bootstrap percentile interval widened about the estimate
    by sqrt(1 + extra / var(replicates)); the blind_baseline finding's interval is the same one
    shifted by 0.5."""
    from ldminv_core.evaluation.blind import NULL_PERMUTATIONS, evaluate_blind, fitting_null, widened_interval
    from ldminv_core.evaluation.protocols import make_protocol
    from ldminv_core.evaluation.resampling import combine_strata, percentile_interval

    paths, labels = two_folders(tmp_path)
    feats = blind_features(paths)
    folds = folds_of(labels)
    design = resample_index(combine_strata(labels), n_boot=300, seed=0)
    res = evaluate_blind(feats, labels, folds, make_protocol("standard"), design)
    null = fitting_null(feats, labels, folds)
    assert res.fitting_permutations == NULL_PERMUTATIONS == null.permutations
    assert (res.fitting_variance, res.fitting_bias) == pytest.approx((null.extra_variance, null.bias), abs=1e-12)
    for g in res.groups:
        reps = np.array([roc_auc_score(labels[row], res.scores[g.group][row]) for row in design])
        raw = percentile_interval(reps)
        k = np.sqrt(1 + res.fitting_variance / np.var(reps))
        lo_w, hi_w = g.auroc - k * (g.auroc - raw[0]), g.auroc + k * (raw[1] - g.auroc)
        want = [float(np.clip(min(lo_w, lo_w - res.fitting_bias), 0, 1)),
                float(np.clip(max(hi_w, hi_w - res.fitting_bias), 0, 1))]
        assert want[0] <= g.auroc <= want[1]
        assert g.ci["auroc"] == pytest.approx(tuple(want), abs=1e-9)
    all_ci = res.group("all").ci["auroc"]
    assert res.finding.ci == pytest.approx((all_ci[0] - 0.5, all_ci[1] - 0.5), abs=1e-9)
    assert widened_interval(0.6, (0.5, 0.7), np.array([0.5, 0.7]), 0.03) == pytest.approx(
        (0.6 - 0.1 * np.sqrt(1 + 0.03 / 0.01), 0.6 + 0.1 * np.sqrt(1 + 0.03 / 0.01)))
    # extended by a bias on its side and clipped: never outside the bounds, always holding the estimate
    assert widened_interval(1.0, (1.0, 1.0), np.array([1.0, 1.0]), 0.01, bounds=(0.0, 1.0), shift=0.02) == (1.0, 1.0)
    assert widened_interval(0.6, (0.5, 0.7), np.array([0.6, 0.6]), 0.0, shift=-0.05) == pytest.approx((0.45, 0.7))


@pytest.mark.slow
def test_the_permutation_null_is_stored_and_read_back(tmp_path):
    from ldminv_core.evaluation.blind import cached_fitting_null, null_file_name

    paths, labels = two_folders(tmp_path)
    feats = blind_features(paths)
    folds = folds_of(labels)
    first = cached_fitting_null(tmp_path / "cache", feats, labels, folds)
    stored = tmp_path / "cache" / null_file_name(labels, folds)
    np.testing.assert_array_equal(np.load(stored), first.aurocs)
    stored.write_bytes(np.lib.format.header_data_from_array_1_0(np.zeros(3)).__repr__().encode())  # damaged
    again = cached_fitting_null(tmp_path / "cache", feats, labels, folds)
    np.testing.assert_array_equal(again.aurocs, first.aurocs)  # recomputed alike (seeded)
    other = folds_of(labels, seed=1)
    assert null_file_name(labels, other) != null_file_name(labels, folds)
