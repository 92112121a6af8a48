"""CLiD on a tiny text-conditioned model trained until it memorises its members
(tests/support/memorised.py): ``analyze --attacks sima,loss,clid`` then ``report --json`` under
the three protocols, masked and unmasked; every CLiD AUROC equals sklearn's on the stored terms
(the masked arm recomputed from the influence, ``honest``'s pooled out-of-fold scores recomputed
from its folds with a numpy calibration), and the memorised members are found (AUROC clearly
above 0.5)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldminv_core.__main__ import main
from ldminv_core.runs import Run
from tests.support.memorised import build_memorised

pytestmark = pytest.mark.slow

DROP = 30.0


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    return build_memorised(tmp_path_factory.mktemp("memorised"))


@pytest.fixture(scope="module")
def run_dir(memorised, tmp_path_factory):
    out = tmp_path_factory.mktemp("memorised_run") / "run"
    assert main(["analyze", "--model", str(memorised.model), "--members", str(memorised.members),
                 "--heldout", str(memorised.heldout), "--out", str(out), "--attacks", "sima,loss,clid",
                 "--timesteps", "100:500:200", "--batch-size", "16", "--device", "cpu", "--threads", "1"]) == 0
    return out


def test_the_model_memorised_its_members(memorised):
    assert memorised.member_loss < 0.1 * memorised.member_loss_before
    assert memorised.member_loss < 0.8 * memorised.heldout_loss


def _calibrated(raw: np.ndarray, labels: np.ndarray, folds: list[list[int]]) -> np.ndarray:
    """Each fold's scores as the share of the other folds' held-out scores below them (linear
    between the distinct reference values, continued beyond them with the end segments' slopes)."""
    out = np.full(raw.shape, np.nan)
    for rows in folds:
        ref = np.sort(raw[[i for other in folds if other is not rows for i in other if labels[i] == 0]])
        u = np.unique(ref)
        share = np.array([(ref < v).mean() for v in u])
        s = raw[rows]
        y = np.interp(s, u, share)
        y = np.where(s < u[0], share[0] + (s - u[0]) * (share[1] - share[0]) / (u[1] - u[0]), y)
        y = np.where(s > u[-1], share[-1] + (s - u[-1]) * (share[-1] - share[-2]) / (u[-1] - u[-2]), y)
        out[rows] = y
    return out


def test_clid_auroc_under_every_protocol_masked_and_unmasked(run_dir, capsys):
    run = Run.open(run_dir)
    labels = np.asarray(run.labels).astype(int)
    n = len(labels)
    flat = np.asarray(run.terms("clid"), dtype=np.float64)[:, 0].reshape(n, -1)
    infl = np.asarray(run.influence, dtype=np.float64).reshape(n, -1)
    keep = np.ones_like(flat, dtype=bool)
    for i in range(n):
        keep[i, np.argsort(infl[i], kind="stable")[:round(flat.shape[1] * DROP / 100)]] = False
    raw = {"baseline": -flat.sum(axis=1), "masked": -(flat * keep).sum(axis=1)}
    row_of = {int(s): i for i, s in enumerate(run.samples["sample_id"])}
    for protocol, extra in (("standard", []), ("paper", []), ("honest", ["--folds", "2"])):
        assert main(["report", str(run_dir), "--json", "--attack", "clid", "--protocol", protocol,
                     "--drop", str(DROP), *extra]) == 0
        clid = json.loads(capsys.readouterr().out)["attacks"]["clid"]
        for arm in ("baseline", "masked"):
            scores = raw[arm]
            if clid[arm].get("folds"):  # honest: the pooled calibrated out-of-fold scores
                folds = [[row_of[s] for s in f["sample_ids"]] for f in clid[arm]["folds"]]
                assert sorted(i for f in folds for i in f) == list(range(n))
                scores = _calibrated(scores, labels, folds)
            want = roc_auc_score(labels, scores)
            assert clid[arm]["auroc"] == pytest.approx(want, abs=1e-12), (protocol, arm)
            assert clid[arm]["auroc"] > 0.75, (protocol, arm)
