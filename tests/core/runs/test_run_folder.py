"""Tests of ldminv_core.runs: the run folder contract, atomic writes, resume and refusal."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ldminv_core.errors import RunError, UnknownNameError
from ldminv_core.evaluation.run_scores import run_scores
from ldminv_core.runs import Run, RunWriter, default_runs_root, delete_run, list_runs, run_status

LAT = (2, 3, 3)
TIMESTEPS = [0, 10]


def _samples(n_members: int = 3, n_heldout: int = 2) -> pd.DataFrame:
    n = n_members + n_heldout
    return pd.DataFrame(
        {
            "sample_id": np.arange(n),
            "path": [f"/data/img_{i}.png" for i in range(n)],
            "split": ["member"] * n_members + ["heldout"] * n_heldout,
            "caption": [None] * n,
            "log_volume": np.linspace(-1.0, 1.0, n),
        }
    )


def _info(residual_dtype: str = "float32") -> dict:
    return {
        "latent_shape": list(LAT),
        "attacks": {
            "sima": {"kind": "terms", "timesteps": TIMESTEPS, "p": 4, "dtype": residual_dtype},
            "pfami": {"kind": "scores", "timesteps": [0, 50], "p": 2},
        },
        "n_members": 3,
        "n_heldout": 2,
        "model": "/models/m",
    }


def _write_complete(path, *, residual_dtype: str = "float32", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    samples = _samples()
    n = len(samples)
    arrays = {
        "latents.npy": rng.normal(size=(n, *LAT)).astype(np.float32),
        "influence.npy": rng.normal(size=(n, *LAT)).astype(np.float32),
        "residuals/sima.npy": rng.random((n, len(TIMESTEPS), *LAT)).astype(residual_dtype),
        "scores/pfami.npy": rng.normal(size=n).astype(np.float32),
    }
    w = RunWriter(path, settings={"seed": 0}, samples=samples, info=_info(residual_dtype))
    for rel, arr in arrays.items():
        if rel.startswith("residuals"):
            mm = w.open_array(rel, arr.shape, arr.dtype, stage="sima")
            mm[:] = arr
            mm.flush()
            del mm
        else:
            w.write_array(rel, arr)
    for stage in ("encode", "geometry", "sima", "pfami"):
        w.mark_stage_done(stage)
    w.finish()
    return arrays


def test_complete_run_round_trip(tmp_path):
    arrays = _write_complete(tmp_path / "run")
    run = Run.open(tmp_path / "run")
    assert run.latent_shape == LAT
    np.testing.assert_array_equal(run.labels, [1, 1, 1, 0, 0])
    assert run.labels.dtype == np.int8
    assert (run.n_members, run.n_heldout) == (3, 2)
    np.testing.assert_array_equal(run.latents, arrays["latents.npy"])
    np.testing.assert_array_equal(run.influence, arrays["influence.npy"])
    np.testing.assert_array_equal(run.log_volume, _samples()["log_volume"].to_numpy())
    assert run.attacks == ["sima", "pfami"]
    assert run.timesteps("sima") == TIMESTEPS
    assert isinstance(run.terms("sima"), np.memmap)
    terms = arrays["residuals/sima.npy"].astype(np.float64)
    np.testing.assert_allclose(run_scores(run, "sima"), -terms.sum(axis=(2, 3, 4)))
    np.testing.assert_allclose(run_scores(run, "sima", t_index=1), -terms[:, 1].sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(run_scores(run, "sima", t_index=-1), -terms[:, -1].sum(axis=(1, 2, 3)))
    with pytest.raises(UnknownNameError, match=r"t_index: expected an index into 2 timesteps, got 2"):
        run_scores(run, "sima", t_index=2)
    np.testing.assert_allclose(run.pfami_scores(), arrays["scores/pfami.npy"])
    np.testing.assert_allclose(run_scores(run, "pfami"), arrays["scores/pfami.npy"])
    # the reader holds no arithmetic: scores are the evaluation layer's
    assert not hasattr(run, "scores")
    with pytest.raises(UnknownNameError, match="'pia'"):
        run.timesteps("pia")
    data = json.loads((tmp_path / "run" / "run.json").read_text())
    assert data["status"] == "complete" and data["stages"]["sima"] is True
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp") or p.name == "run.lock"]


def test_float16_residuals(tmp_path):
    arrays = _write_complete(tmp_path / "run", residual_dtype="float16")
    run = Run.open(tmp_path / "run")
    assert run.terms("sima").dtype == np.float16
    np.testing.assert_allclose(run_scores(run, "sima"), -arrays["residuals/sima.npy"].astype(np.float64).sum(axis=(2, 3, 4)))


def test_unfinished_run_is_refused_and_resumable(tmp_path):
    path = tmp_path / "run"
    w = RunWriter(path, settings={"seed": 0, "topk": 5}, samples=_samples(), info=_info())
    mm = w.open_array("latents.npy", (5, *LAT), np.float32, stage="encode")
    mm[:2] = 1.5
    mm.flush()
    w.set_progress("encode", 2)
    with pytest.raises(RunError, match="being written by process"):
        Run.open(path)
    with pytest.raises(RunError, match="being written"):
        RunWriter(path, settings={"seed": 0, "topk": 5})
    w.close()
    assert run_status(path) == "unfinished"
    with pytest.raises(RunError, match="unfinished"):
        Run.open(path)
    with pytest.raises(RunError, match=r"different settings \(topk: 5 there, 6 now\)"):
        RunWriter(path, settings={"seed": 0, "topk": 6})
    w2 = RunWriter(path, settings={"seed": 0, "topk": 5})
    assert w2.resumed and w2.progress("encode") == 2 and not w2.stage_done("encode")
    again = w2.open_array("latents.npy", (5, *LAT), np.float32, stage="encode")
    np.testing.assert_array_equal(again[:2], 1.5)  # re-opened, not truncated
    assert w2.progress("encode") == 2
    fresh = w2.open_array("latents.npy", (6, *LAT), np.float32, stage="encode")  # other shape: recreated
    assert fresh.shape == (6, *LAT) and w2.progress("encode") == 0
    w2.close()


def test_resume_with_other_samples_is_refused(tmp_path):
    path = tmp_path / "run"
    RunWriter(path, settings={"a": 1}, samples=_samples(), info=_info()).close()
    other = _samples(3, 3)
    with pytest.raises(RunError, match="other images"):
        RunWriter(path, settings={"a": 1}, samples=other)


def test_complete_run_is_not_reopened_for_writing(tmp_path):
    _write_complete(tmp_path / "run")
    with pytest.raises(RunError, match="already holds a complete run"):
        RunWriter(tmp_path / "run", settings={"seed": 0}, samples=_samples())


def test_non_run_folder_is_never_written_or_deleted(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="not empty"):
        RunWriter(folder, settings={}, samples=_samples())
    with pytest.raises(RunError, match="not an ldminv run folder"):
        delete_run(folder)
    (folder / "run.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(RunError, match="not an ldminv run folder"):
        delete_run(folder)
    assert (folder / "precious.txt").read_text() == "keep me"


def test_inconsistent_array_shape_is_named(tmp_path):
    _write_complete(tmp_path / "run")
    np.save(tmp_path / "run" / "influence.npy", np.zeros((4, *LAT), np.float32))
    with pytest.raises(RunError) as err:
        Run.open(tmp_path / "run")
    msg = str(err.value)
    assert "influence.npy" in msg and "(4, 2, 3, 3)" in msg and "(5, 2, 3, 3)" in msg
    _write_complete(tmp_path / "run2")
    (tmp_path / "run2" / "residuals" / "sima.npy").unlink()
    with pytest.raises(RunError, match=r"sima.npy: file is missing"):
        Run.open(tmp_path / "run2")


def test_missing_folder_and_run_json(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        Run.open(tmp_path / "nothing")
    with pytest.raises(RunError, match="run.json is missing"):
        Run.open(tmp_path)


def test_list_and_delete_runs(tmp_path, monkeypatch):
    _write_complete(tmp_path / "a")
    RunWriter(tmp_path / "b", settings={}, samples=_samples(), info=_info()).close()
    (tmp_path / "not_a_run").mkdir()
    infos = {i.path.name: i for i in list_runs(tmp_path)}
    assert set(infos) == {"a", "b"}
    assert infos["a"].status == "complete" and infos["b"].status == "unfinished"
    assert (infos["a"].n_members, infos["a"].n_heldout, infos["a"].model) == (3, 2, "/models/m")
    delete_run(tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert [i.path.name for i in list_runs(tmp_path)] == ["a"]

    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    assert default_runs_root() == tmp_path / "home" / "runs"
    monkeypatch.delenv("LDMINV_HOME")
    assert default_runs_root().parts[-3:] == (".cache", "ldminv", "runs")


def test_bad_samples_table_is_rejected(tmp_path):
    bad = _samples()
    bad.loc[0, "split"] = "train"
    with pytest.raises(RunError, match="split"):
        RunWriter(tmp_path / "r", settings={}, samples=bad)
    with pytest.raises(RunError, match="sample_id"):
        RunWriter(tmp_path / "r2", settings={}, samples=_samples().iloc[::-1])


def test_load_npy_and_npz_read_arrays_and_refuse_pickles(tmp_path):
    """The one .npy / .npz reader of the runs (serialised header parsing): memory maps on
    request, whole arrays otherwise, object (pickled) arrays refused, missing keys named."""
    import threading

    from ldminv_core.runs import load_npy, load_npz

    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", arr)
    mm = load_npy(tmp_path / "a.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    np.testing.assert_array_equal(mm, arr)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), arr)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npy(tmp_path / "obj.npy")
    np.savez(tmp_path / "b.npz", x=arr, y=arr[0])
    got = load_npz(tmp_path / "b.npz", ("x", "y"))
    np.testing.assert_array_equal(got["y"], arr[0])
    with pytest.raises(KeyError, match="z"):
        load_npz(tmp_path / "b.npz", ("z",))
    # many threads at once (the dashboard's warm-up next to a running analysis): all succeed
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert load_npy(tmp_path / "a.npy", mmap_mode="r").shape == (3, 4)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
