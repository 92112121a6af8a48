"""Two options a new user meets first: ``--probes`` (what the geometry really uses, and why) and
``--out`` (every unusable run folder refused before anything loads).

Probes: the default is "auto" (the geometry plan's choice, ``HUTCHINSON_RANK_PROBES``); a number
is honoured. ``--help``, the printed estimate and run.json say the same, and the stored influence
is recomputed here with the probe count run.json names, so a record that lied would fail.

Out: /proc, /sys, a path under a regular file, an existing file, a non-empty folder that holds no
run; the pseudo-file-system check and the write probe are each tested on their own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldminv_core.pipeline import cost as cost_mod, inputs as pipeline_inputs
from ldminv_core.pipeline import inputs as inputs_mod
from ldminv_core.pipeline import output_folder as output_folder_mod
from ldminv_core.models import loading as loading_mod
from ldminv_core.__main__ import main
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.plan import check_config
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.errors import LdminvError, RunError
from ldminv_core.geometry import HUTCHINSON_RANK_PROBES, decoder_geometry
from ldminv_core.models.loading import load_model

FAST = ["--attacks", "sima", "--timesteps", "0:20:10", "--batch-size", "4", "--device", "cpu", "--limit", "3"]


def _cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _analyze_args(model, dirs, out, *extra):
    return ["analyze", "--model", model, "--members", dirs[0], "--heldout", dirs[1], "--out", out, *FAST, *extra]


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Loading a model fails the test: --out must be refused first."""

    def boom(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(inputs_mod, "load_model", boom)
    monkeypatch.setattr(loading_mod, "load_model", boom)


def _stored_influence_matches(run: Path, model: Path, *, probes: int) -> None:
    """influence.npy of ``run`` equals a Hutchinson estimate with ``probes`` probes (and differs from
    one with half as many): the probe count run.json names is the one that ran."""
    data = json.loads((run / "run.json").read_text())
    m = load_model(str(model), device=torch.device("cpu"))
    z = torch.from_numpy(np.load(run / "latents.npy")[:2])
    geo = data["geometry"]

    def influence(n: int) -> np.ndarray:
        g = decoder_geometry(m.decoder_fn(), z, k=geo["topk"], influence="hutchinson",
                             log_volume_method=geo["log_volume_method"], probes=n, seed=0, sample_ids=[0, 1])
        return g.influence.numpy()

    stored = np.load(run / "influence.npy")[:2]
    np.testing.assert_allclose(stored, influence(probes), rtol=1e-4, atol=1e-5)
    assert not np.allclose(stored, influence(max(1, probes // 2)), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- probes


def test_help_states_the_automatic_probe_count(capsys):
    code, out, _ = _cli(["analyze", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "--probes auto|N" in text and "auto (default) takes 256" in text and "a number is used as given" in text
    assert HUTCHINSON_RANK_PROBES == 256  # the number --help states is the one the plan uses
    assert "default 16" not in text


def test_explicit_probes_are_honoured_and_recorded(tmp_path, tiny_uncond_model, tiny_image_dirs, capsys):
    out = tmp_path / "eight"
    code, stdout, err = _cli(_analyze_args(tiny_uncond_model, tiny_image_dirs, out, "--influence", "hutchinson",
                                           "--probes", "8"), capsys)
    assert code == 0, err
    assert "influence hutchinson (8 probes)" in err  # the plan line of the estimate
    assert "Hutchinson probes: 8 probes as requested (fewer than the 256" in err
    data = json.loads((out / "run.json").read_text())
    geo = data["geometry"]
    assert data["config"]["probes"] == 8
    assert (geo["probes_requested"], geo["probes"], geo["probes_used"], geo["plan"]["probes"]) == (8, 8, 8, 8)
    assert geo["probes_reason"].startswith("8 probes as requested")
    assert geo["plan"]["products"]["vjp"] >= 8
    _stored_influence_matches(out, tiny_uncond_model, probes=8)


def test_auto_probes_use_the_plans_count_and_say_why(tmp_path, tiny_uncond_model, tiny_image_dirs, capsys):
    out = tmp_path / "auto"
    code, stdout, err = _cli(_analyze_args(tiny_uncond_model, tiny_image_dirs, out, "--influence", "hutchinson"),
                             capsys)
    assert code == 0, err
    assert f"influence hutchinson ({HUTCHINSON_RANK_PROBES} probes, auto)" in err
    data = json.loads((out / "run.json").read_text())
    geo = data["geometry"]
    assert data["config"]["probes"] == "auto"
    assert (geo["probes_requested"], geo["probes"], geo["probes_used"]) == ("auto", HUTCHINSON_RANK_PROBES,
                                                                            HUTCHINSON_RANK_PROBES)
    assert "chosen automatically" in geo["probes_reason"] and "0.98" in geo["probes_reason"]
    _stored_influence_matches(out, tiny_uncond_model, probes=HUTCHINSON_RANK_PROBES)


def test_exact_influence_records_that_no_probes_are_used(tmp_path, tiny_uncond_model, tiny_image_dirs):
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(tmp_path / "exact"), attacks="sima",
                        timesteps="0:20:10", batch_size=4, device="cpu", limit=3, probes=12)
    data = json.loads((run_analysis(cfg) / "run.json").read_text())
    geo = data["geometry"]
    assert geo["influence"] == "exact" and geo["probes"] is None and geo["probes_requested"] == 12
    assert geo["probes_reason"].startswith("no Hutchinson probes: the influence is exact")
    assert "the 12 requested are not used" in geo["probes_reason"]


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5"])
def test_bad_probe_counts_exit_2_naming_the_option(tmp_path, tiny_uncond_model, tiny_image_dirs, capsys,
                                                   no_model_loading, value):
    code, _, err = _cli(_analyze_args(tiny_uncond_model, tiny_image_dirs, tmp_path / "r", "--probes", value), capsys)
    assert code == 2 and err.startswith("error: ") and "probes" in err and value in err, err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_runs_stored_before_auto_probes_still_match(tmp_path, tiny_uncond_model, tiny_image_dirs):
    """A run whose run.json predates "auto" (config probes 16 under influence auto, no
    probes_requested) is the same analysis as probes="auto": nothing to redo. An explicit other
    count is not."""
    kw = dict(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]), heldout=str(tiny_image_dirs[1]),
              out=str(tmp_path / "old"), attacks="sima", timesteps="0:20:10", batch_size=4, device="cpu", limit=3)
    run = run_analysis(AnalyzeConfig(**kw))
    path = run / "run.json"
    data = json.loads(path.read_text())
    data["config"]["probes"] = 16
    for key in ("probes_requested", "probes_used", "probes_reason"):
        data["geometry"].pop(key, None)
    path.write_text(json.dumps(data))
    assert check_config(AnalyzeConfig(**kw)) is True
    with pytest.raises(RunError, match="probes: 16 there, 8 now"):
        check_config(AnalyzeConfig(**kw, probes=8))
    # a run made with "auto" does not match an explicit 16 either
    data["config"]["probes"] = "auto"
    data["geometry"]["probes_requested"] = "auto"
    path.write_text(json.dumps(data))
    with pytest.raises(RunError, match="probes: 'auto' there, 16 now"):
        check_config(AnalyzeConfig(**kw, probes=16))


# ----------------------------------------------------------------------------- --out


def _refused(args, capsys, *culprits) -> str:
    code, out, err = _cli(args, capsys)
    assert code == 2, (args, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "--out" in err and "expected a folder where a run can be written" in err, err
    for c in culprits:
        assert str(c) in err, (c, err)
    assert "Traceback" not in err and "cost estimate" not in err + out
    return err


@pytest.mark.parametrize("target", ["/proc/ldminv-x", "/sys/ldminv-x", "/sys/kernel/ldminv-x"])
def test_out_on_a_pseudo_file_system_is_refused_before_loading(tiny_uncond_model, tiny_image_dirs, capsys,
                                                                no_model_loading, target):
    err = _refused(_analyze_args(tiny_uncond_model, tiny_image_dirs, target), capsys, target)
    assert "file system (a kernel interface, not storage)" in err
    assert not Path(target).exists()


def test_out_in_a_process_folder_of_proc_is_refused(tiny_uncond_model, tiny_image_dirs, capsys, no_model_loading):
    """/proc/self resolves to /proc/PID, which even root may not write into."""
    err = _refused(_analyze_args(tiny_uncond_model, tiny_image_dirs, "/proc/self/ldminv-run"), capsys,
                   "/proc/", "ldminv-run")
    assert "not writable" in err or "file system" in err


@pytest.mark.parametrize("target", ["/proc/ldminv-x/run", "/sys/ldminv-x"])
def test_the_write_probe_refuses_what_the_file_system_check_lets_through(tiny_uncond_model, tiny_image_dirs,
                                                                         capsys, no_model_loading, monkeypatch,
                                                                         target):
    """Without the file-system table (as on a system that has none), creating the folder and
    writing a test file is what refuses it, with the system's reason."""
    monkeypatch.setattr(output_folder_mod, "_filesystem_type", lambda path: None)
    err = _refused(_analyze_args(tiny_uncond_model, tiny_image_dirs, target), capsys, target)
    assert "creating it and writing a test file there failed" in err


def test_out_under_a_file_or_on_a_file_is_refused(tmp_path, tiny_uncond_model, tiny_image_dirs, capsys,
                                                  no_model_loading):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    err = _refused(_analyze_args(tiny_uncond_model, tiny_image_dirs, plain / "deeper" / "run"), capsys, plain)
    assert "is a file" in err
    err = _refused(_analyze_args(tiny_uncond_model, tiny_image_dirs, plain), capsys, plain)
    assert "it is a file" in err
    assert plain.read_text() == "x"


def test_out_in_a_folder_that_is_not_writable(tmp_path, tiny_uncond_model, tiny_image_dirs, monkeypatch,
                                              no_model_loading):
    """Tests run as root, who may write into a chmod 500 folder; a folder whose test write fails
    (here: the file system answers EROFS, as a read-only mount does) is refused all the same."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    real = output_folder_mod._probe_write

    def read_only(folder):
        if ro in [folder, *folder.parents]:
            raise OSError(30, "Read-only file system", str(folder))
        return real(folder)

    monkeypatch.setattr(output_folder_mod, "_probe_write", read_only)
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(ro / "run"), device="cpu")
    with pytest.raises(RunError) as err:
        check_config(cfg)
    assert "Read-only file system" in str(err.value) and str(ro / "run") in str(err.value)
    assert isinstance(err.value, LdminvError) and not (ro / "run").exists()


def test_out_that_is_a_non_empty_folder_without_a_run_is_refused(tmp_path, tiny_uncond_model, tiny_image_dirs,
                                                                 capsys, no_model_loading):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, _, err = _cli(_analyze_args(tiny_uncond_model, tiny_image_dirs, busy), capsys)
    assert code == 2 and str(busy) in err and "not empty" in err
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]  # the probe left nothing behind


def test_the_probe_leaves_no_trace(tmp_path, tiny_uncond_model, tiny_image_dirs):
    """Checking a new, nested --out creates and writes there for real, then removes what it made."""
    target = tmp_path / "a" / "b" / "run"
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(target), device="cpu")
    assert check_config(cfg) is False
    assert not (tmp_path / "a").exists()
    calls = []
    real = output_folder_mod._probe_write
    output_folder_mod._probe_write = lambda folder: (calls.append(folder), real(folder))[1]
    try:
        check_config(cfg)
    finally:
        output_folder_mod._probe_write = real
    assert calls == [target]


def test_model_page_probe_control_says_auto_and_passes_what_was_chosen(tmp_path, monkeypatch):
    """The form's control: 0 = auto (the plan's 256, said in its help), a number passed as given."""
    from streamlit.testing.v1 import AppTest

    from support.cost_estimates import fake_estimate as _fake_estimate

    seen = []
    monkeypatch.setattr(pipeline_inputs, "load_config_model", lambda config, **kw: object())
    monkeypatch.setattr(cost_mod, "estimate_cost",
                        lambda config, *, model=None: (seen.append(config), _fake_estimate())[1])
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    page = str(Path(__file__).resolve().parents[3] / "pages" / "model_data.py")
    at = AppTest.from_file(page, default_timeout=120).run()
    control = at.number_input(key="new_probes")
    assert control.value == 0 and "0 = auto" in control.label
    assert f"{HUTCHINSON_RANK_PROBES} probes" in control.help and "used as given" in control.help
    at.button(key="new_estimate").click().run()
    assert not at.exception and seen[-1].probes == "auto"
    at.number_input(key="new_probes").set_value(24).run()
    at.button(key="new_estimate").click().run()
    assert not at.exception and seen[-1].probes == 24


def test_another_ranks_write_probe_is_not_content(tmp_path):
    """Two ranks of a torchrun launch check the same --out at once: the probe file the other rank
    is writing (and the folder its probe created) must not make the folder 'not empty'."""
    from ldminv_core.pipeline.output_folder import PROBE_PREFIX
    from ldminv_core.pipeline.plan import _holds_content

    out = tmp_path / "out"
    assert not _holds_content(out)  # missing (another rank's probe removed it again)
    out.mkdir()
    (out / f"{PROBE_PREFIX}abc123").write_bytes(b"ldminv")
    assert not _holds_content(out)
    (out / "notes.txt").write_text("mine")
    assert _holds_content(out)
