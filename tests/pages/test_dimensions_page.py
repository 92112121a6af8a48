"""The Dimensions page: a coordinate query means exactly what it says and never adds many at once
unasked, and the table's held-out - member shift has the sign of the coordinate's AUROC - 0.5
(a mean gap of heavy-tailed terms does not).

Runs are synthetic (``synthetic_runs.write_run``): every term and label is known.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.proto.MultiSelect_pb2 import MultiSelect
from streamlit.testing.v1 import AppTest

from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import dimension_table
from ldminv_core.runs import Run
from ldminv_core.evaluation.pair_shift import heldout_member_shift, shift_is_exact

from ldminv_app import figures
from ldminv_app.selections import parse_coordinate_query
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120
SHAPE = (2, 4, 4)  # d = 32
TIMESTEPS = [0, 10, 20]


def _heavy_tailed_terms(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...], t: int) -> np.ndarray:
    """|eps|^4 terms (as SimA's), members' eps slightly smaller: the usual member has the smaller
    term, but a rare huge member term can pull the member mean above the held-out mean."""
    n = labels.shape[0]
    eps = rng.standard_normal(size=(n, t, *shape))
    eps[labels == 1] *= 0.93
    return (np.abs(eps) ** 4).astype(np.float32)


@pytest.fixture
def run(tmp_path, monkeypatch) -> Run:
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(40, dtype=np.int8), np.zeros(40, dtype=np.int8)]
    terms = _heavy_tailed_terms(rng, labels, SHAPE, len(TIMESTEPS))
    out = write_run(tmp_path / "runs" / "dims", terms=terms, influence=rng.normal(size=(80, *SHAPE)).astype(np.float32),
                    log_volume=rng.normal(size=80), labels=labels, timesteps=TIMESTEPS)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(out.path))
    return out


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/dimensions.py").run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _manual(at: AppTest, run: Run) -> list[int]:
    return at.session_state["manual_coords"][str(run.path)]


def _flat(c: int, y: int, x: int, shape=SHAPE) -> int:
    return int(np.ravel_multi_index((c, y, x), shape))


# --------------------------------------------------------------------------- coordinate queries


@pytest.mark.parametrize(("text", "want"), [
    ("ch 0 · y 3", {(0, 3, x) for x in range(16)}),           # every column of that row, not y 30..
    ("ch 0 · y 1", {(0, 1, x) for x in range(16)}),           # y 1 only, not y 10..15
    ("ch 0 · y 3 · x 1", {(0, 3, 1)}),
    ("ch0 y3 x1", {(0, 3, 1)}),
    ("x 1, ch 2", {(2, y, 1) for y in range(16)}),            # any order
    ("channel=3 row: 15", {(3, 15, x) for x in range(16)}),
    ("y 12", {(c, 12, x) for c in range(4) for x in range(16)}),
    ("#300", {(1, 2, 12)}),                                   # flat index (1 * 16 + 2) * 16 + 12
    ("1, 2, 12", {(1, 2, 12)}),
    ("ch 1 · y 2 · x 12  (#300)", {(1, 2, 12)}),              # a label pasted whole
])
def test_a_query_selects_exactly_what_it_names(text, want):
    shape = (4, 16, 16)
    query = parse_coordinate_query(text, shape=shape)
    got = {tuple(int(v) for v in np.unravel_index(c, shape)) for c in query.coordinates(shape=shape)}
    assert got == want
    assert query.exact == (len(want) == 1)


@pytest.mark.parametrize(("text", "words"), [
    ("ch 4", "ch 4 is outside the latent: channels run from 0 to 3"),
    ("y 16", "y 16 is outside the latent: rows y run from 0 to 15"),
    ("#1024", "#1024 is outside the latent: flat indices run from 0 to 1023"),
    ("ch 0 ch 1", "ch is given twice (0 and 1)"),
    ("ch 1 · y 2 · x 3 (#300)", "#300 is ch 1 · y 2 · x 12, not x 3"),
    ("hello", "could not read 'hello'"),
    ("3 1", "could not read '3 1'"),
])
def test_a_bad_query_says_what_is_wrong(text, words):
    with pytest.raises(LdminvError) as info:
        parse_coordinate_query(text, shape=(4, 16, 16))
    assert words in str(info.value)


@pytest.mark.slow
def test_dimensions_find_adds_what_the_query_names_and_only_when_asked(run):
    at = _page()
    assert at.session_state["manual_coords"].get(str(run.path), []) == []
    at.text_input(key="dim_find").input("ch 0 · y 3").run()
    _ok(at)
    row = [_flat(0, 3, x) for x in range(4)]
    assert any(c.value.startswith("4 coordinates with ch 0 · y 3: ch 0 · y 3 · x 0  (#12)") for c in at.caption)
    add = at.button(key="dim_find_add")
    assert add.label == "Add 4 coordinates with ch 0 · y 3"
    assert at.session_state["manual_coords"].get(str(run.path), []) == []  # typing alone adds nothing
    add.click().run()
    _ok(at)
    assert _manual(at, run) == row

    at.text_input(key="dim_find").input("ch 1 · y 2 · x 3").run()
    _ok(at)
    assert at.button(key="dim_find_add").label == "Add ch 1 · y 2 · x 3"
    at.button(key="dim_find_add").click().run()
    _ok(at)
    assert _manual(at, run) == sorted(row + [_flat(1, 2, 3)])

    at.text_input(key="dim_find").input("ch 0 · y 3 · x 2").run()  # already picked: nothing to add
    _ok(at)
    assert at.button(key="dim_find_add").disabled
    assert any("(1 already in the manual mask)" in c.value for c in at.caption)

    at.text_input(key="dim_find").input("ch 7").run()
    _ok(at)
    assert [w.value for w in at.warning] == ["ch 7 is outside the latent: channels run from 0 to 1"]
    assert not [b for b in at.button if b.key == "dim_find_add"]


def test_dimensions_picker_filters_by_text_and_has_no_bulk_option(run):
    at = _page()
    picker = at.multiselect(key="dim_picked")
    modes = MultiSelect.DESCRIPTOR.fields_by_name["filter_mode"].enum_type.values_by_name
    assert picker.proto.filter_mode == modes["FILTER_MODE_CONTAINS"].number  # not a fuzzy subsequence
    assert picker.proto.select_all == 0  # no "Select all" / "Select N matches" option
    assert picker.options[_flat(0, 3, 1)] == f"{figures.coord_label(0, 3, 1)}  (#{_flat(0, 3, 1)})"


# --------------------------------------------------------------------------- shift vs AUROC


def test_shift_is_the_median_pairwise_difference_and_never_opposes_the_auroc():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(60, dtype=np.int8), np.zeros(50, dtype=np.int8)]
    values = _heavy_tailed_terms(rng, labels, (64,), 1)[:, 0]
    table = dimension_table(np.zeros((110, 1, 8, 8), np.float32), values.reshape(110, 1, 8, 8), labels)
    table = table.sort_values("coord")
    auroc, mean_gap = table["auroc"].to_numpy(), table["gap"].to_numpy()
    # the data are such that the mean gap points against the AUROC somewhere
    assert np.sum(np.sign(mean_gap) != np.sign(auroc - 0.5)) >= 3

    shift, exact = heldout_member_shift(values, labels)
    assert exact and shift_is_exact(60, 50, 64)
    brute = [np.median(np.subtract.outer(values[labels == 0, j].astype(np.float64),
                                         values[labels == 1, j].astype(np.float64))) for j in range(64)]
    np.testing.assert_allclose(shift, brute, rtol=1e-6)
    assert not np.any((shift > 0) & (auroc < 0.5)) and not np.any((shift < 0) & (auroc > 0.5))

    # estimated from quantiles (large runs): the sign still agrees, the value stays close
    approx, exact = heldout_member_shift(values, labels, max_pairs=400)
    assert not exact and not shift_is_exact(60, 50, 64, max_pairs=400)
    assert not np.any((approx > 0) & (auroc < 0.5)) and not np.any((approx < 0) & (auroc > 0.5))
    spread = np.subtract(*np.percentile(values, [75, 25], axis=0))
    assert np.all(np.abs(approx - shift) <= 0.1 * spread)


def test_shift_counts_ties_as_the_auroc_does():
    # float16-like ties: many equal terms; the shift is 0 or of the AUROC's sign, never opposite
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(30, dtype=np.int8), np.zeros(30, dtype=np.int8)]
    values = rng.integers(0, 3, size=(60, 200)).astype(np.float32)
    table = dimension_table(np.zeros((60, 2, 10, 10), np.float32), values.reshape(60, 2, 10, 10), labels)
    auroc = table.sort_values("coord")["auroc"].to_numpy()
    shift, _ = heldout_member_shift(values, labels)
    assert not np.any((shift > 0) & (auroc < 0.5)) and not np.any((shift < 0) & (auroc > 0.5))
    assert np.any(shift == 0) and np.any(auroc != 0.5)


def test_shift_input_errors_are_clear():
    with pytest.raises(LdminvError, match="members and held-out"):
        heldout_member_shift(np.ones((4, 2)), np.ones(4))
    with pytest.raises(LdminvError, match=r"labels: expected 4 labels"):
        heldout_member_shift(np.ones((4, 2)), np.ones(3))
    with pytest.raises(LdminvError, match=r"values: expected shape \(N, d\)"):
        heldout_member_shift(np.ones(4), np.ones(4))


def test_dimensions_table_shows_a_shift_of_the_auroc_sign_in_one_format(run):
    at = _page()
    table = at.dataframe[0].value
    ti = TIMESTEPS.index(int(next(c.value for c in at.caption if "coordinates shown" in c.value)
                             .rsplit("t = ", 1)[1].rstrip(".")))
    terms_t = run.terms("sima")[:, ti].reshape(len(run), -1).astype(np.float64)
    lab = run.labels
    core = dimension_table(run.influence, run.terms("sima")[:, ti], lab).set_index("coord")
    # on this run the mean gap points against the AUROC for some coordinates; the shift never does
    assert (np.sign(core["gap"]) != np.sign(core["auroc"] - 0.5)).sum() >= 1
    for _, row in table.iterrows():
        c = int(row["coord"])
        brute = np.median(np.subtract.outer(terms_t[lab == 0, c], terms_t[lab == 1, c]))
        assert row["shift"] == pytest.approx(brute, rel=1e-5)
        assert not (row["shift"] > 0 and row["auroc"] < 0.5) and not (row["shift"] < 0 and row["auroc"] > 0.5)
    proto = at.dataframe[0].proto
    assert list(proto.column_order) == ["coord", "channel", "row", "col", "influence_mean", "influence_std",
                                        "shift", "auroc", "influence_rank"]  # no mean-based gap columns
    config = json.loads(proto.columns)
    shift_cfg = config["shift"] if "shift" in config else config["col:shift"]
    assert shift_cfg["label"] == "shift (held-out − member)"
    assert shift_cfg["type_config"]["format"] == "%.3e"  # one format for every row
    assert any("It always has the sign of AUROC − 0.5" in c.value for c in at.caption)
