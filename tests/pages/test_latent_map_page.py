"""The Latent map page keeps every UMAP it computed (also when the run folder is read-only), and
its thumbnails are a balanced, labelled, seeded sample of the selection.

Runs are synthetic (``synthetic_runs.write_run``); umap-learn is replaced by a seeded stand-in
(no numba compile), counted so that a recomputation shows.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from ldminv_core import embedding
from ldminv_core.errors import LdminvError, RunError
from ldminv_core.runs import Run

from ldminv_app import selections

from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120
SHAPE = (2, 4, 4)
TIMESTEPS = [0, 10, 20]


def _make_run(folder: Path, *, n_members: int, n_heldout: int, images: bool = True) -> Run:
    rng = np.random.default_rng(0)
    n = n_members + n_heldout
    labels = np.r_[np.ones(n_members, dtype=np.int8), np.zeros(n_heldout, dtype=np.int8)]
    terms = rng.gamma(2.0, 1.0, size=(n, len(TIMESTEPS), *SHAPE)).astype(np.float32)
    run = write_run(folder, terms=terms, influence=rng.normal(size=(n, *SHAPE)).astype(np.float32),
                    log_volume=rng.normal(size=n), labels=labels, timesteps=TIMESTEPS)
    # latents that differ per sample (write_run stores zeros)
    np.save(Path(run.path) / "latents.npy", rng.normal(size=(n, *SHAPE)).astype(np.float32))
    if images:
        for p in run.samples["path"]:
            Image.fromarray(rng.integers(0, 255, size=(16, 16), dtype=np.uint8), mode="L").save(p)
    return Run.open(run.path)


@pytest.fixture
def fake_umap(monkeypatch):
    """umap-learn replaced by a seeded stand-in; the list records every computation."""
    calls: list[tuple[int, int]] = []

    def fake(latents, *, seed=0, n_neighbors=15, progress=None):
        calls.append((int(seed), int(n_neighbors)))
        return np.random.default_rng([seed, n_neighbors]).normal(size=(latents.shape[0], 2)).astype(np.float32)

    monkeypatch.setattr(embedding, "umap_embedding", fake)
    return calls


def _use(run: Run, monkeypatch, home: Path) -> None:
    monkeypatch.setenv("LDMINV_HOME", str(home))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/latent_map.py").run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _umap_x(at: AppTest) -> np.ndarray | None:
    """x coordinates of the map's points, or None when no map is drawn."""
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith("umap_chart"):
            x = json.loads(el.proto.spec)["data"][0]["x"]
            if isinstance(x, dict):  # a base64 typed array
                import base64
                return np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"]))
            return np.asarray(x, dtype=np.float64)
    return None


def _no_umap_notice(at: AppTest) -> bool:
    return any(i.value.startswith("No UMAP with these settings yet") for i in at.info)


def _expected(n: int, seed: int, n_neighbors: int = 15) -> np.ndarray:
    return np.random.default_rng([seed, n_neighbors]).normal(size=(n, 2)).astype(np.float32)


@pytest.mark.slow
def test_every_computed_umap_stays_available(tmp_path, monkeypatch, fake_umap):
    run = _make_run(tmp_path / "runs" / "r", n_members=10, n_heldout=10, images=False)
    _use(run, monkeypatch, tmp_path)
    n = len(run)
    at = _page()
    assert _no_umap_notice(at) and _umap_x(at) is None

    at.button(key="umap_compute").click().run()  # seed 0
    _ok(at)
    np.testing.assert_allclose(_umap_x(at), _expected(n, 0)[:, 0], rtol=1e-6)

    at.number_input(key="umap_seed").set_value(1).run()
    _ok(at)
    assert _no_umap_notice(at)
    at.button(key="umap_compute").click().run()  # seed 1
    _ok(at)
    np.testing.assert_allclose(_umap_x(at), _expected(n, 1)[:, 0], rtol=1e-6)

    at.number_input(key="umap_seed").set_value(0).run()  # back to seed 0: shown at once
    _ok(at)
    assert not _no_umap_notice(at) and not [b for b in at.button if b.key == "umap_compute"]
    np.testing.assert_allclose(_umap_x(at), _expected(n, 0)[:, 0], rtol=1e-6)

    at.selectbox(key="umap_color").select("split").run()  # the next control change keeps it
    _ok(at)
    assert not _no_umap_notice(at)
    np.testing.assert_allclose(_umap_x(at), _expected(n, 0)[:, 0], rtol=1e-6)
    assert fake_umap == [(0, 15), (1, 15)]  # each setting computed once

    # both embeddings are on disk: a new session (fresh memory) reads either back
    for seed in (0, 1):
        stored = embedding.read_cached_umap(run.path, n, seed=seed, n_neighbors=15)
        np.testing.assert_array_equal(stored, _expected(n, seed))
    fresh = _page()
    fresh.number_input(key="umap_seed").set_value(1).run()
    _ok(fresh)
    assert not _no_umap_notice(fresh)
    np.testing.assert_allclose(_umap_x(fresh), _expected(n, 1)[:, 0], rtol=1e-6)
    assert len(fake_umap) == 2


def test_a_read_only_run_folder_keeps_the_umap_for_the_server(tmp_path, monkeypatch, fake_umap):
    run = _make_run(tmp_path / "runs" / "ro", n_members=6, n_heldout=6, images=False)
    _use(run, monkeypatch, tmp_path)

    def refuse(run_dir, emb, *, seed=0, n_neighbors=15):
        raise RunError(f"could not store the UMAP in {run_dir}: Read-only file system")

    monkeypatch.setattr(embedding, "store_umap", refuse)
    at = _page()
    at.button(key="umap_compute").click().run()
    _ok(at)
    assert [w.value for w in at.warning] == [
        f"Kept until the dashboard restarts, not saved with the run: could not store the UMAP in {run.path}: "
        "Read-only file system"]
    at.selectbox(key="umap_color").select("split").run()
    _ok(at)
    assert not _no_umap_notice(at)
    np.testing.assert_allclose(_umap_x(at), _expected(len(run), 0)[:, 0], rtol=1e-6)
    assert fake_umap == [(0, 15)]


# --------------------------------------------------------------------------- thumbnails


def _select(at: AppTest, rows: list[int]) -> AppTest:
    """What the browser sends after a box selection of ``rows`` (the chart's widget state)."""
    chart = next(el for el in at.get("plotly_chart") if el.proto.id.endswith("umap_chart"))
    states = at._tree.get_widget_states()
    w = states.widgets.add()
    w.id = chart.proto.id
    points = [{"curve_number": 0, "point_number": r, "point_index": r, "customdata": [r, r]} for r in rows]
    w.string_value = json.dumps({"selection": {"points": points, "point_indices": rows, "box": [], "lasso": []}})
    return at._run(WidgetStates(widgets=list(states.widgets)))


def _thumbnails(at: AppTest) -> list[tuple[str, int]]:
    """(split as captioned, sample id) of every thumbnail caption, in page order."""
    out = []
    for c in at.caption:
        m = re.fullmatch(r"(member|held-out) #(\d+)  \nlog-vol -?\d+\.\d\d", c.value)
        if m:
            out.append((m[1], int(m[2])))
    return out


@pytest.mark.slow
def test_thumbnails_are_a_balanced_labelled_sample_of_the_selection(tmp_path, monkeypatch, fake_umap):
    run = _make_run(tmp_path / "runs" / "big", n_members=147, n_heldout=144)
    _use(run, monkeypatch, tmp_path)
    embedding.store_umap(run.path, _expected(len(run), 0), seed=0, n_neighbors=15)
    split_of = {int(i): ("member" if s == "member" else "held-out")
                for i, s in zip(run.samples["sample_id"], run.samples["split"])}
    at = _page()
    _select(at, list(range(len(run))))  # every sample: the first 48 rows are all members
    _ok(at)
    shown = _thumbnails(at)
    assert len(shown) == len(at.get("image")) == 48
    assert [s for s, _ in shown].count("member") == 24 and [s for s, _ in shown].count("held-out") == 24
    assert all(split_of[i] == s for s, i in shown)  # each caption names the sample's own split
    assert len({i for _, i in shown}) == 48
    assert sorted(i for s, i in shown if s == "member") != list(range(24))  # drawn, not the first rows
    headings = [m.value for m in at.markdown]
    assert "Members: 24 of 147 shown" in headings and "Held-out: 24 of 144 shown" in headings
    assert any(c.value.startswith("A random sample (seed 0)") for c in at.caption)

    at.run()  # the same sample on the next run (seeded)
    assert _thumbnails(at) == shown
    at.button(key="umap_thumb_resample").click().run()
    _ok(at)
    other = _thumbnails(at)
    assert any(c.value.startswith("A random sample (seed 1)") for c in at.caption)
    assert len(other) == 48 and set(other) != set(shown)
    assert [s for s, _ in other].count("member") == 24

    # 10 members and 100 held-out selected: all 10 members, held-out fill the other places
    rows = list(range(10)) + list(range(147, 247))
    _select(at, rows)
    _ok(at)
    shown = _thumbnails(at)
    assert sorted(i for s, i in shown if s == "member") == list(range(10))
    assert len([i for s, i in shown if s == "held-out"]) == 38
    assert all(147 <= i < 247 for s, i in shown if s == "held-out")


def test_balanced_sample_unit():
    labels = np.r_[np.ones(147, dtype=np.int8), np.zeros(144, dtype=np.int8)]
    rows = list(range(291))
    a = selections.balanced_sample(rows, labels, limit=48, seed=3)
    assert a == selections.balanced_sample(rows[::-1], labels, limit=48, seed=3)  # order of rows does not matter
    assert len(a) == 48 and labels[a].sum() == 24 and a[:24] == sorted(a[:24]) and a[24:] == sorted(a[24:])
    assert a != selections.balanced_sample(rows, labels, limit=48, seed=4)
    assert selections.balanced_sample([5, 3, 3, 200], labels, limit=48) == [3, 5, 200]  # few: all, members first
    assert labels[selections.balanced_sample(rows, labels, limit=7)].sum() == 3  # odd limit: 3 + 4
    with pytest.raises(LdminvError, match="limit"):
        selections.balanced_sample(rows, labels, limit=0)
    with pytest.raises(LdminvError, match="rows: expected indices from 0 to 290"):
        selections.balanced_sample([0, 291], labels)


def test_selection_metrics_follow_the_honest_protocol(tmp_path, monkeypatch, fake_umap):
    """Under honest the selection's AUROC is that of the pooled calibrated out-of-fold scores
    (Evaluation.selection), not an in-sample AUROC at the sidebar's t."""
    from ldminv_core.evaluation import Evaluation
    from sklearn.metrics import roc_auc_score

    run = _make_run(tmp_path / "runs" / "honest", n_members=40, n_heldout=40, images=False)
    _use(run, monkeypatch, tmp_path)
    embedding.store_umap(run.path, _expected(len(run), 0), seed=0, n_neighbors=15)
    at = _page()
    at.session_state["protocol"] = "honest"
    rows = list(range(0, 80, 3))
    _select(at, rows)
    _ok(at)
    ev = Evaluation(run, "sima", "honest", n_boot=0)
    want = ev.selection(rows)
    pooled = ev.scores("baseline")
    labels = np.asarray(run.labels)
    assert want["auroc"] == pytest.approx(roc_auc_score(labels[rows], pooled[rows]), abs=1e-12)
    shown = {m.label: m.value for m in at.metric}
    assert float(shown["AUROC (selection)"]) == pytest.approx(want["auroc"], abs=1e-12)
    assert float(shown["TPR@1%FPR (selection)"]) == pytest.approx(want["tpr_at_1fpr"], abs=1e-12)
    raw = cache_free_raw_auroc(run, rows)
    assert want["auroc"] != pytest.approx(raw, abs=1e-6)  # precondition: in-sample at one t differs
    assert any("pooled calibrated out-of-fold scores" in c.value for c in at.caption)


def cache_free_raw_auroc(run: Run, rows: list[int]) -> float:
    """In-sample AUROC of the selection's raw baseline scores at the first timestep (what the page
    showed under every protocol before)."""
    from sklearn.metrics import roc_auc_score
    terms = np.load(Path(run.path) / "residuals" / "sima.npy")
    score = -terms[:, 0].reshape(len(run), -1).astype(np.float64).sum(axis=1)
    return float(roc_auc_score(np.asarray(run.labels)[rows], score[rows]))
