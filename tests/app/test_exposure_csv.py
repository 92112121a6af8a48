"""The exposure list's CSV (``csv_export.exposure_table`` / ``exposure_csv``): its columns, one row
per member most exposed first, every value the evaluation layer's, and the no-geometry note."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest

from ldminv_app.html_report.csv_export import EXPOSURE_COLUMNS, exposure_csv, exposure_table
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.exposure import exposure_list
from ldminv_core.runs import Run, RunWriter
from tests.synthetic_runs import write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(30, int), np.zeros(90, int)]
    terms = rng.normal(size=(120, 2, 2, 2, 2)).astype(np.float32)
    terms[labels == 1, 0] -= 0.5
    return write_run(tmp_path_factory.mktemp("exposure_csv") / "run", terms=terms,
                     influence=rng.normal(size=(120, 2, 2, 2)).astype(np.float32), log_volume=rng.normal(size=120),
                     labels=labels, timesteps=[5, 50], captions=[f"caption {i}" for i in range(120)],
                     pfami=(rng.normal(size=120) + labels).astype(np.float32))


def test_csv_columns_and_rows(run):
    lst = exposure_list({a: Evaluation(run, a, "standard", n_boot=0) for a in run.attacks}, attack="sima",
                        arm="masked", drop=25.0)
    back = pd.read_csv(io.StringIO(exposure_csv(lst)), keep_default_na=False)
    assert tuple(back.columns) == EXPOSURE_COLUMNS
    assert len(back) == 30 and list(back["member_rank"]) == list(range(1, 31))
    assert list(back["sample_id"]) == [e.sample_id for e in lst.entries]
    assert set(back["sample_id"]) == set(np.flatnonzero(run.labels == 1))
    np.testing.assert_array_equal(back["score"].astype(float), [e.score for e in lst.entries])  # full precision
    np.testing.assert_array_equal(back["log_volume"].astype(float),
                                  run.samples["log_volume"].to_numpy()[[e.row for e in lst.entries]])
    assert list(back["flagged_by"]) == [";".join(e.flagged_by) for e in lst.entries]
    assert list(back["n_attacks_flagging"]) == [e.n_flagged for e in lst.entries]
    assert list(back["caption"]) == [f"caption {e.row}" for e in lst.entries]
    assert set(back["attack"]) == {"sima"} and set(back["arm"]) == {"masked"} and set(back["protocol"]) == {"standard"}
    assert set(back["t"]) == {lst.t} and set(back["drop_percent"]) == {25.0} and set(back["log_volume_note"]) == {""}


def test_csv_without_geometry_says_why(tmp_path, run):
    writer = RunWriter(tmp_path / "partial", settings={"synthetic": True}, samples=run.samples)
    writer.update(latent_shape=[2, 2, 2], attacks={"pfami": {"kind": "scores"}})
    writer.write_array("latents.npy", np.zeros((len(run), 2, 2, 2), dtype=np.float32))
    writer.write_array("scores/pfami.npy", np.asarray(run.stored_scores("pfami")))
    for stage in ("encode", "pfami"):
        writer.mark_stage_done(stage)
    writer.close()
    part = Run.open(tmp_path / "partial", partial=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lst = exposure_list({"pfami": Evaluation(part, "pfami", n_boot=0)}, attack="pfami", arm="baseline")
    table = exposure_table(lst)
    assert table["log_volume"].isna().all()
    assert table["log_volume_note"].str.contains("no geometry stage").all()
    assert table["t"].isna().all() and table["drop_percent"].isna().all()
