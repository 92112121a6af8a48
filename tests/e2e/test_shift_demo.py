"""The shift demo (``python -m ldminv_core analyze --demo shift``): its folders are built
deterministically from the demo's held-out images (footwear as "members", clothes as "held-out",
no image in both, none a training image), and the command analyzes them, computes the decoder
geometry the shipped bundle does not cover (saying so), and its report states the shift.

The command runs here on a tiny random model with a few images (the real demo model takes about
as long as the demo; its numbers are in the closing note of issue 22).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldminv_core import demo
from ldminv_core.__main__ import main
from ldminv_core.cli.parser import build_parser as _parser
from ldminv_core.errors import LdminvError
from ldminv_core.runs import Run

def _pixels(path: Path) -> str:
    with Image.open(path) as im:
        return hashlib.sha256(np.asarray(im.convert("L")).tobytes()).hexdigest()


def _meta(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_shift_folders_are_built_deterministically_without_overlap(tmp_path):
    members, heldout = demo.build_shift_demo_data(tmp_path / "a")
    assert (members, heldout) == (tmp_path / "a" / "members", tmp_path / "a" / "heldout")
    source = {r["file_name"]: r["text"] for r in _meta(demo.DEMO_HELDOUT_DIR)}
    for folder, classes in ((members, demo.SHIFT_MEMBER_CLASSES), (heldout, demo.SHIFT_HELDOUT_CLASSES)):
        rows = _meta(folder)
        files = sorted(p.name for p in folder.glob("*.png"))
        assert [r["file_name"] for r in rows] == files  # every image has its caption line, in name order
        assert {r["text"] for r in rows} == set(classes)
        assert files == sorted(n for n, t in source.items() if t in classes)  # all of the source's images of them
        for r in rows:
            assert r["text"] == source[r["file_name"]]
            assert (folder / r["file_name"]).read_bytes() == (demo.DEMO_HELDOUT_DIR / r["file_name"]).read_bytes()
    assert not set(demo.SHIFT_MEMBER_CLASSES) & set(demo.SHIFT_HELDOUT_CLASSES)
    # no image in both folders, and none is one of the model's training images (compared by pixels)
    m_hash = {_pixels(p) for p in members.glob("*.png")}
    h_hash = {_pixels(p) for p in heldout.glob("*.png")}
    assert len(m_hash) == len(list(members.glob("*.png"))) and not m_hash & h_hash
    train = {_pixels(p) for p in demo.DEMO_MEMBERS_DIR.glob("*.png")}
    assert not (m_hash | h_hash) & train
    # deterministic: a second build elsewhere is byte-identical but for the recorded source path;
    # a build over an existing one is reused as it is
    demo.build_shift_demo_data(tmp_path / "b")
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a if k != "shift-demo.json")
    stamp = (members / "metadata.jsonl").stat().st_mtime_ns
    assert demo.build_shift_demo_data(tmp_path / "a") == (members, heldout)
    assert (members / "metadata.jsonl").stat().st_mtime_ns == stamp
    # a damaged build (an image removed) is rebuilt
    victim = next(members.glob("*.png"))
    victim.unlink()
    demo.build_shift_demo_data(tmp_path / "a")
    assert victim.is_file() and _tree(tmp_path / "a") == a


def test_shift_folders_refuse_a_foreign_folder_and_a_bad_source(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(LdminvError, match="not a shift-demo data folder"):
        demo.build_shift_demo_data(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(LdminvError, match="metadata.jsonl"):
        demo.build_shift_demo_data(tmp_path / "x", source=tmp_path / "mine")
    src = tmp_path / "src"
    src.mkdir()
    (src / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a photo of a sandal"}) + "\n")
    with pytest.raises(LdminvError, match="missing, e.g. a.png"):
        demo.build_shift_demo_data(tmp_path / "y", source=src)
    Image.new("L", (32, 32)).save(src / "a.png")
    with pytest.raises(LdminvError, match="heldout folder would be empty"):
        demo.build_shift_demo_data(tmp_path / "y", source=src)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_demo_option_keeps_its_old_meaning(capsys):
    parse = lambda *a: _parser().parse_args(["analyze", *a])  # noqa: E731
    assert parse("--demo").demo == "membership"
    assert parse("--demo", "--limit", "5").demo == "membership" and parse("--demo", "--limit", "5").limit == 5
    assert parse("--demo", "shift").demo == "shift"
    assert parse("--demo", "membership").demo == "membership"
    assert parse().demo is None
    assert main(["analyze", "--demo", "drift"]) == 2
    err = capsys.readouterr().err
    assert "--demo" in err and "shift" in err and "drift" in err


@pytest.mark.slow
def test_cli_shift_demo_analyzes_and_reports_the_shift(tmp_path, monkeypatch, capsys, tiny_uncond_model):
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tiny_uncond_model)
    monkeypatch.setattr(demo, "SHIFT_DEMO_ANALYZE_DEFAULTS",
                        {"attacks": ("sima",), "timesteps": "0:30:10", "batch_size": 60, "limit": 30})
    assert main(["analyze", "--demo", "shift", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "shift demo: 'members' = held-out footwear images" in captured.err
    assert "decoder geometry computed:" in captured.err  # the shipped bundle does not apply: said, not failed
    assert "run complete" in captured.out and "Distribution shift" in captured.out
    assert demo.shift_demo_run_dir() == tmp_path / "home" / "runs" / "demo-shift"
    assert demo.shift_demo_data_dir() == tmp_path / "home" / "demo-shift-data"
    run = Run.open(demo.shift_demo_run_dir())
    assert run.settings["config"]["limit"] == 30 and run.attacks == ["sima"]
    assert run.settings["members"] == str((demo.shift_demo_data_dir() / "members").resolve())
    geometry = json.loads((run.path / "run.json").read_text())["geometry"]
    if "precomputed" in geometry:  # a checkout with the shipped bundle: checked and not used
        assert geometry["precomputed"]["used"] is False and geometry["precomputed"]["reason"]
    captions = run.samples.groupby("split")["caption"].agg(set)
    assert captions["member"] <= set(demo.SHIFT_MEMBER_CLASSES)
    assert captions["heldout"] <= set(demo.SHIFT_HELDOUT_CLASSES)
    assert main(["report", str(run.path), "--protocol", "honest", "--n-boot", "200"]) == 0
    text = capsys.readouterr().out
    assert "Distribution shift: the files alone, without the model, tell members from held-out images" in text
    assert "as the paper reports" not in text


def test_model_page_offers_the_shift_demo(tmp_path, monkeypatch):
    """Model & data: "Shift demo" builds the folders under LDMINV_HOME and fills them in, with the
    demo model; switching back gives the membership demo's folders again."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    page = Path(__file__).resolve().parents[2] / "pages" / "model_data.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="new_model_kind").set_value("Shift demo").run()
    assert not at.exception, [e.value for e in at.exception]
    members, heldout = demo.build_shift_demo_data()
    assert members.parent == tmp_path / "home" / "demo-shift-data"
    assert at.text_input(key="new_members_path").value == str(members)
    assert at.text_input(key="new_heldout_path").value == str(heldout)
    assert any("never saw" in c.value for c in at.caption)
    at.radio(key="new_model_kind").set_value("Built-in demo").run()
    assert at.text_input(key="new_members_path").value == str(demo.DEMO_MEMBERS_DIR)
