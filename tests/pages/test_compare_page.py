"""The Compare page (pages/compare.py) with streamlit.testing's AppTest, on two synthetic runs of the
same image files under the runs folder: it lists them, shows the metrics and findings side by
side with the evaluation layer's numbers (compare_runs), the newly exposed images' thumbnails,
and refuses a pair of runs on different samples with the difference named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ldminv_core.evaluation import DEFAULT_N_BOOT
from ldminv_core.evaluation.compare import compare_runs
from ldminv_core.evaluation.wording import finding_title
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = pytest.mark.slow  # several page scripts over bootstrap evaluations: over 10 s


def _run(folder: Path, *, shrink: float, seed: int, n: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, dtype=np.int64), np.zeros(n // 2, dtype=np.int64)]
    terms = rng.exponential(1.0, size=(n, 2, 2, 3, 3)).astype(np.float32)
    terms[labels == 1] *= shrink
    geo = np.random.default_rng(5)
    run = write_run(folder, terms=terms, influence=geo.normal(size=(n, 2, 3, 3)).astype(np.float32),
                    log_volume=geo.normal(size=n), labels=labels, timesteps=[0, 10])
    px = np.random.default_rng(7)
    for path in run.samples["path"]:
        Image.fromarray(px.integers(0, 255, size=(12, 12, 3), dtype=np.uint8), mode="RGB").save(path)
    return folder


def test_compare_page_shows_the_comparison(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    a = _run(root / "a_base", shrink=0.9, seed=1)
    b = _run(root / "b_lora", shrink=0.6, seed=2)
    _run(root / "c_small", shrink=0.6, seed=3, n=40)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(a))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    ms = at.multiselect(key="compare_runs")
    assert set(ms.options) == {str(a), str(b), str(root / "c_small")}
    ms.set_value([str(a), str(b)]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    (cmp,) = compare_runs([a, b], protocol="standard", n_boot=DEFAULT_N_BOOT)
    metrics, findings = at.dataframe[0].value, at.dataframe[1].value
    row = metrics[(metrics["arm"] == "baseline") & (metrics["metric"] == "AUROC")].iloc[0]
    want = next(m for m in cmp.metrics if m.arm == "baseline" and m.metric == "auroc")
    assert row["B − A"] == f"{want.difference:+.3f}" and row["verdict"] == want.verdict
    assert row["paired CI"] == f"[{want.ci[0]:+.3f}, {want.ci[1]:+.3f}]"
    assert list(findings["finding"]) == [finding_title(f.id) for f in cmp.findings]
    e = cmp.exposure[0]
    assert any(f"{e.newly_exposed.size} newly exposed" in m.value for m in at.markdown)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert sorted(captions) == sorted(f"#{i} · {'member' if cmp.labels[i] else 'held-out'}" for i in e.newly_exposed[:24])
    # runs on other samples: refused, the counts named
    at.multiselect(key="compare_runs").set_value([str(a), str(root / "c_small")]).run()
    assert any("A has 60" in x.value and "B has 40" in x.value for x in at.error)
