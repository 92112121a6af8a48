"""What a user sees while an analysis is planned and runs: the cost estimate says what costs
what before anything starts; the progress moves inside a geometry sample; the sidebar and the
page format one progress record; no start-up time is promised without its measurement and load.
"""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from ldminv_core.pipeline import cost as cost_mod, inputs as pipeline_inputs
from ldminv_core.pipeline.batches import AnalysisCancelled
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import format_duration
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.geometry import decoder_geometry
from ldminv_core.models.loading import LoadedModel

from ldminv_app import cache

from ldminv_app.progress import job_progress_text

from ldminv_app.startup import DEMO_INTRO
from ldminv_app.jobs import AnalysisJob, JobState
from support.cost_estimates import fake_estimate as _fake_estimate

REPO = Path(__file__).resolve().parents[3]
APP = str(REPO / "app.py")
TIMEOUT = 120


def _config(model, dirs, out, **kw) -> AnalyzeConfig:
    base = dict(attacks="sima", timesteps="0:20:10", batch_size=8, device="cpu")
    base.update(kw)
    return AnalyzeConfig(model=str(model), members=str(dirs[0]), heldout=str(dirs[1]), out=str(out), **base)


# ----------------------------------------------------------------------------- geometry progress


def _slow(decode, seconds: float, calls: list):
    def slow_decode(z):
        calls.append(time.monotonic())
        time.sleep(seconds)
        return decode(z)

    return slow_decode


def test_decoder_geometry_reports_progress_inside_a_sample():
    """Two samples in one block, 8 decoder calls each: progress moves in fractions of a sample
    after every call, never backwards, and ends on the whole count."""
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3) * 0.3  # (in, out, kh, kw): 4 latent channels to RGB

    def decode(z):
        return torch.tanh(torch.nn.functional.conv_transpose2d(z, weight, stride=2, padding=1, output_padding=1))

    z = torch.randn(2, 4, 4, 4)
    seen: list[float] = []
    geo = decoder_geometry(_slow(decode, 0.0, []), z, k=8, influence="exact", log_volume_method="exact",
                           chunk_size=8, progress=seen.append)
    inside_first = [x for x in seen if 0 < x < 1]
    assert len(inside_first) >= 4, seen  # d = 64 JVPs in chunks of 8: several reports within sample 1
    assert seen == sorted(seen) and seen[-1] == 2
    assert any(not float(x).is_integer() for x in inside_first)
    ref = decoder_geometry(decode, z, k=8, influence="exact", log_volume_method="exact", chunk_size=8)
    torch.testing.assert_close(geo.log_volume, ref.log_volume)  # reporting changes nothing computed


@pytest.mark.slow
def test_geometry_stage_reports_within_a_batch_on_a_slow_decoder(tmp_path, tiny_uncond_model, tiny_image_dirs,
                                                                  monkeypatch):
    """One batch of 8 samples on a decoder slowed to 0.3 s a call: without reports inside the
    batch the stage would sit at 0/8 for seconds; with them it moves every call or so."""
    calls: list[float] = []
    real = LoadedModel.decoder_fn
    monkeypatch.setattr(LoadedModel, "decoder_fn", lambda self: _slow(real(self), 0.3, calls))
    seen: list[tuple[float, str, float, int]] = []
    run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "slow", limit=4),
                 progress=lambda s, d, t: seen.append((time.monotonic(), s, d, t)))
    geo = [(when, done) for when, stage, done, total in seen if stage == "geometry"]
    inside = [done for _, done in geo if 0 < done < 8]
    assert len(inside) >= 3, geo
    assert [d for _, d in geo] == sorted(d for _, d in geo) and geo[-1][1] == 8
    assert any(not float(d).is_integer() for d in inside)  # a sample under way shows as a fraction
    # from the first sample on (before it, the cost model times the decoder to choose the paths,
    # which the dashboard and the command line do in the estimate, before the run)
    computing = [when for when, done in geo if done > 0]
    span, gaps = computing[-1] - computing[0], np.diff(computing)
    assert span > 2.0 and gaps.max() < 1.5, (span, gaps)  # moving every call, not once per batch


def test_cli_bars_show_fractions_of_a_sample(capsys):
    from ldminv_core.cli.analyze_command import _Bars

    bars = _Bars()
    bars("geometry", 0, 8)
    bars("geometry", 0.3333, 8)
    assert bars.bar.n == 0.3
    bars("geometry", 8, 8)
    assert bars.bar.n == 8
    bars.close()


# ----------------------------------------------------------------------------- one progress record


def test_rate_holds_still_between_reports_and_the_time_left_counts_down():
    now = time.time()
    snap = JobState(status="running", stage="geometry", done=10.0, total=110, stages_seen=["geometry"], result=None,
                    error=None, error_details="", started=now - 30, finished=None, stage_started=now - 20,
                    stage_first_done=0.0, stages=["encode", "sima", "geometry"], updated=now - 10)
    assert snap.rate == pytest.approx(1.0)  # 10 samples in the 10 s up to the last report, not 10 / 20
    assert snap.stage_eta == pytest.approx(100 - 10, abs=0.5)  # 100 left at 1/s, 10 s of it already gone
    assert snap.stage_number == (3, 3)
    fraction, text = job_progress_text(snap)
    assert text.startswith("Stage 3/3 · Decoder geometry (log-volume and influence) · 10/110 samples")
    assert "1.0 samples/s" in text and "left in this stage" in text
    almost = JobState(**{**snap.__dict__, "done": 2.97, "updated": now})
    assert "· 2.9/110 samples" in job_progress_text(almost)[1]  # rounded down: the third is not done
    slow = JobState(**{**snap.__dict__, "done": 2.5, "updated": now})
    assert "2.5/110 samples" in job_progress_text(slow)[1] and "8.0 s per sample" in job_progress_text(slow)[1]  # 2.5 in 20 s


def test_job_order_puts_a_reused_geometry_where_it_ran(tmp_path):
    """A demo-like job whose precomputed geometry lands right after encoding: the stage numbers
    follow the order the job met the stages, so PIA is stage 5 of 6 wherever it is shown."""
    release = threading.Event()

    def target(config, *, progress, should_stop):
        progress("encode", 8, 8)
        progress("blind", 8, 8)
        progress("geometry", 8, 8)
        progress("sima", 8, 8)
        progress("pia", 4, 8)
        release.wait(30)
        return None

    config = AnalyzeConfig(model="m", members="a", heldout="b", out=str(tmp_path / "r"), attacks=("sima", "pia", "pfami"))
    job = AnalysisJob(label="r", config=config, target=target).start()
    try:
        deadline = time.monotonic() + 10
        while job.state().stage != "pia" and time.monotonic() < deadline:
            time.sleep(0.01)
        snap = job.state()
        assert snap.stages == ["encode", "blind", "geometry", "sima", "pia", "pfami"]
        assert job_progress_text(snap)[1].startswith("Stage 5/6 · Attack PIA · 4/8 samples")
    finally:
        release.set()
        job.wait(10)


@pytest.fixture()
def partial_with_reused_geometry(tmp_path, tiny_uncond_model, tiny_image_dirs):
    """A run whose geometry was reused from a bundle (so it is done before the attacks) and which
    was stopped in PIA: stages done encode, geometry, SimA."""
    from ldminv_core.geometry.precomputed import save_precomputed, vae_digest
    from ldminv_core.runs import Run

    full = run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "full", limit=4))
    run = Run.open(full)
    geo = run.settings["geometry"]
    bundle_dir = save_precomputed(
        tmp_path / "bundle", samples=run.samples, latents=np.asarray(run.latents), influence=np.asarray(run.influence),
        log_volume=run.log_volume, vae_sha256=vae_digest(tiny_uncond_model), provenance={"test": 1},
        settings={"topk": geo["topk"], "influence": geo["influence"], "probes": geo["probes"],
                  "log_volume_method": geo["log_volume_method"], "seed": 0})
    from ldminv_core.geometry.precomputed import load_precomputed

    out = tmp_path / "runs" / "partial"
    seen: list[str] = []
    with pytest.raises(AnalysisCancelled):
        run_analysis(_config(tiny_uncond_model, tiny_image_dirs, out, limit=4, attacks=("sima", "pia", "pfami"),
                             batch_size=4),
                     precomputed=load_precomputed(bundle_dir), progress=lambda s, d, t: seen.append(s),
                     should_stop=lambda: seen[-1] == "pia")
    assert seen.index("geometry") < seen.index("sima")  # the reused geometry landed first
    return out


def test_sidebar_and_page_show_the_same_stage_line(partial_with_reused_geometry, tmp_path, monkeypatch):
    """The Model & data page of a running job whose run is the active partial run: the page's bar
    and the sidebar's bar show one line, formatted from the one record (stage number, name,
    samples and rate alike)."""
    out = partial_with_reused_geometry
    registry = cache.JobRegistry()
    monkeypatch.setattr(cache, "job_registry", lambda: registry)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDMINV_RUN", str(out))
    release = threading.Event()

    def target(config, *, progress, should_stop):
        progress("pia", 0, 8)
        time.sleep(0.3)
        progress("pia", 4, 8)
        release.wait(60)
        return None

    config = AnalyzeConfig(model="m", members="a", heldout="b", out=str(out), attacks=("sima", "pia", "pfami"))
    job_id = str(out.resolve())
    job = registry.start(job_id, AnalysisJob(label="partial", config=config, target=target))
    try:
        deadline = time.monotonic() + 10
        while job.state().done < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        at.switch_page("pages/model_data.py")
        at.session_state["analysis_job"] = job_id
        at.session_state["_partial_opened"] = job_id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        main = [p.proto.text for p in at.main.get("progress")]
        side = [p.proto.text for p in at.sidebar.get("progress")]
        assert len(main) == 1 and len(side) == 1, (main, side)
        head = lambda text: text.split(" · about ")[0]  # noqa: E731 - the time left counts down between the two
        assert head(main[0]) == head(side[0])
        assert head(main[0]).startswith("Stage 5/6 · Attack PIA · 4/8 samples · ")  # encode, blind, geometry, SimA done
        assert "left in this stage" in main[0] and "left in this stage" in side[0]
    finally:
        release.set()
        job.wait(10)


# ----------------------------------------------------------------------------- the cost estimate


def test_estimate_breaks_the_time_down_per_stage():
    est = _fake_estimate()
    text = str(est)
    geometry_row = next(line for line in text.splitlines() if line.startswith("geometry"))
    assert "3.24 s" in geometry_row and "10 min 48 s" in geometry_row and "96 %" in geometry_row
    assert est.breakdown() == ("decoder geometry: 96 % of the time (10 min 48 s, 3.24 s per image); PIA 2 %, SimA 1 %, "
                               "loading 1 %, encoding 1 %")
    assert est.breakdown() in text.splitlines()


def _model_page(monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    at = AppTest.from_file(str(REPO / "pages" / "model_data.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_model_page_shows_each_stages_share_before_starting(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline_inputs, "load_config_model", lambda config, **kw: object())
    monkeypatch.setattr(cost_mod, "estimate_cost", lambda config, *, model=None: _fake_estimate())
    at = _model_page(monkeypatch, tmp_path)
    at.button(key="new_estimate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(df.value for df in at.dataframe if "est. time" in df.value.columns).set_index("stage")
    assert list(table.index) == ["load", "encode", "sima", "pia", "geometry", "total"]  # every stage, in run order
    assert table.loc["geometry", "what"] == "decoder geometry"
    assert (table.loc["geometry", "per image"], table.loc["geometry", "est. time"], table.loc["geometry", "share"]) == (
        "3.24 s", "10 min 48 s", "96 %")
    assert table.loc["sima", "share"] == "1 %" and table.loc["total", "est. time"] == format_duration(678.0)
    shown = " ".join(m.value for m in at.markdown)
    assert "Where the time goes: decoder geometry: 96 % of the time (10 min 48 s, 3.24 s per image)" in shown
    assert "about **11 min 18 s**" in shown


def test_model_page_estimate_rows_are_the_estimates_stages(monkeypatch, tmp_path, tiny_uncond_model,
                                                           tiny_image_dirs):
    """With a real model: the geometry row carries the seconds the cost model predicted."""
    captured = []
    real = cost_mod.estimate_cost
    monkeypatch.setattr(cost_mod, "estimate_cost", lambda config, **kw: captured.append(real(config, **kw))
                        or captured[-1])
    at = _model_page(monkeypatch, tmp_path)
    at.radio(key="new_model_kind").set_value("Local folder").run()
    at.text_input(key="new_model_path").input(str(tiny_uncond_model))
    at.text_input(key="new_members_path").input(str(tiny_image_dirs[0]))
    at.text_input(key="new_heldout_path").input(str(tiny_image_dirs[1]))
    at.button(key="new_estimate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    est = captured[-1]
    table = next(df.value for df in at.dataframe if "est. time" in df.value.columns).set_index("stage")
    geo = next(s for s in est.stages if s.stage == "geometry")
    assert table.loc["geometry", "est. time"] == format_duration(geo.seconds)
    assert table.loc["geometry", "per image"] == cost_mod.format_per_image(geo.seconds / geo.images)
    assert table.loc["geometry", "share"] == cost_mod.format_percent(geo.seconds / est.total_seconds)
    assert table.loc["geometry", "decoder JVP/VJP"] == f"{geo.decoder_products:,}"


def test_quick_preset_promises_no_time(monkeypatch, tmp_path):
    at = _model_page(monkeypatch, tmp_path)
    caption = next(c.value for c in at.caption if "quick first look" in c.value)
    assert not re.search(r"minute|second|\bhours?\b|\d+ ?s\b", caption), caption
    assert "Estimate cost" in caption and "share" in caption


# ----------------------------------------------------------------------------- start-up time


_DURATION = re.compile(r"(half a minute|\d+(\.\d+)?(-\d+(\.\d+)?)? ?(s|seconds?|minutes?|min)\b)")


def test_first_start_text_promises_no_time():
    assert not _DURATION.search(DEMO_INTRO), DEMO_INTRO
    assert "time left" in DEMO_INTRO


def test_readme_states_first_start_times_with_their_load():
    """Every start-up time in the README's set-up paragraph is a measured range next to the load
    it was measured at."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("```", 1)[0]
    sentences = [s for s in re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(setup.split())) if _DURATION.search(s)]
    assert sentences
    for sentence in sentences:
        assert "load average" in sentence, sentence
