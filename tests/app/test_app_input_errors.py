"""Bad inputs to the dashboard, each pinned by a test: hostile or broken uploads (zip bombs,
lying headers, too many entries, colliding names, traversal and absolute names, symbolic links,
corrupt and empty archives), every action of the Model & data page given a bad path or run (an
error box, the state kept), runs reached through a symbolic link never deleted, and the run's
recorded warnings shown on every page.

Runs are synthetic (``synthetic_runs.write_run``); uploads are built in memory with zipfile.
"""
from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from support.apptest import settle
from ldminv_core.errors import DataLoadError
from ldminv_core.runs import Run, RunWriter

from ldminv_app import uploads
from ldminv_app.uploads import save_uploads
from support.apptest import PAGES as APP_PAGES
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120
SHAPE = (2, 4, 4)
TIMESTEPS = [0, 10, 20]
PAGES = (*APP_PAGES, "pages/export.py")
PNG = (  # a valid 1x1 grey PNG
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00"
    b"\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _nothing_left(tmp_path: Path, dest: Path) -> None:
    """A refused upload leaves neither ``dest`` nor a temporary folder nor an empty parent."""
    assert not dest.exists()
    assert [p for p in tmp_path.rglob("*")] == [], list(tmp_path.rglob("*"))


# =========================================================================== uploads


class TestZipLimits:
    def test_zip_bomb_is_refused_by_the_ratio_guard(self, tmp_path):
        bomb = _zip({"imgs/zeros.png": b"\0" * (20 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
        assert len(bomb) < 100_000  # a small archive that unpacks to 20 MiB
        dest = tmp_path / "uploads" / "abc" / "members"
        with pytest.raises(DataLoadError) as err:
            save_uploads([("bomb.zip", bomb)], dest)
        msg = str(err.value)
        assert "bomb.zip" in msg and "imgs/zeros.png" in msg and "max_ratio" in msg and "zip bomb" in msg
        _nothing_left(tmp_path, dest)

    def test_total_unpacked_size_cap_from_the_headers(self, tmp_path):
        data = _zip({f"z{i}.png": b"\0" * 400_000 for i in range(5)}, compression=zipfile.ZIP_DEFLATED)
        dest = tmp_path / "up" / "members"
        with pytest.raises(DataLoadError) as err:
            save_uploads([("many.zip", data)], dest, max_unpacked_bytes=1_000_000, max_ratio=float("inf"))
        msg = str(err.value)
        assert "many.zip" in msg and "2,000,000 bytes" in msg and "1,000,000" in msg and "max_unpacked_bytes" in msg
        _nothing_left(tmp_path, dest)

    def test_per_entry_cap_from_the_headers(self, tmp_path):
        data = _zip({"ok.png": PNG, "deep/big.png": b"\0" * 300_000}, compression=zipfile.ZIP_DEFLATED)
        dest = tmp_path / "members"
        with pytest.raises(DataLoadError) as err:
            save_uploads([("d.zip", data)], dest, max_entry_bytes=100_000)
        msg = str(err.value)
        assert "d.zip" in msg and "'deep/big.png'" in msg and "100,000" in msg and "max_entry_bytes" in msg
        _nothing_left(tmp_path, dest)

    def test_header_that_lies_about_the_size_is_caught_while_reading(self, tmp_path):
        """The central directory says 10 bytes; the entry holds 50,000: the read stops at the
        declared size and the CRC no longer matches (zipfile), so the upload is refused naming
        the entry, and nothing is written."""
        data = bytearray(_zip({"ok.png": PNG, "liar.png": b"x" * 50_000}))
        cd = data.rfind(b"PK\x01\x02")  # the last central directory header: liar.png
        assert data[cd + 46: cd + 46 + 8] == b"liar.png"
        data[cd + 24: cd + 28] = struct.pack("<I", 10)  # uncompressed size
        dest = tmp_path / "members"
        with pytest.raises(DataLoadError) as err:
            save_uploads([("liar.zip", bytes(data))], dest)
        msg = str(err.value)
        assert "liar.zip" in msg and "'liar.png'" in msg and "cannot be unpacked" in msg
        _nothing_left(tmp_path, dest)

    def test_streaming_caps_hold_when_the_headers_are_not_believed(self, tmp_path, monkeypatch):
        """Headers that declare nothing (as ZipInfo.file_size = 0 would): the per-entry and total
        caps still stop the read at the limit, from the bytes actually unpacked."""
        monkeypatch.setattr(uploads, "_declared_size", lambda info: 0)
        data = _zip({"a.png": b"\0" * 300_000}, compression=zipfile.ZIP_DEFLATED)
        dest = tmp_path / "members"
        with pytest.raises(DataLoadError) as err:
            save_uploads([("s.zip", data)], dest, max_entry_bytes=100_000, max_ratio=float("inf"))
        assert "s.zip" in str(err.value) and "'a.png'" in str(err.value) and "unpacks to more than 100,000" in str(
            err.value)
        _nothing_left(tmp_path, dest)
        data = _zip({"a.png": b"\0" * 60_000, "b.png": b"\0" * 60_000}, compression=zipfile.ZIP_DEFLATED)
        with pytest.raises(DataLoadError) as err:
            save_uploads([("t.zip", data)], dest, max_unpacked_bytes=100_000, max_ratio=float("inf"))
        assert "t.zip" in str(err.value) and "'b.png'" in str(err.value) and "100,000 bytes in all" in str(err.value)
        _nothing_left(tmp_path, dest)

    def test_streaming_ratio_guard(self, tmp_path, monkeypatch):
        monkeypatch.setattr(uploads, "_declared_size", lambda info: 0)
        data = _zip({"r.png": b"\0" * 2_000_000}, compression=zipfile.ZIP_DEFLATED)
        with pytest.raises(DataLoadError, match=r"r\.zip: entry 'r\.png' unpacks more than .* zip bomb"):
            save_uploads([("r.zip", data)], tmp_path / "m", max_ratio=50, ratio_floor_bytes=1_000_000)
        _nothing_left(tmp_path, tmp_path / "m")

    def test_too_many_entries(self, tmp_path):
        data = _zip({f"e{i}.png": PNG for i in range(30)})
        with pytest.raises(DataLoadError) as err:
            save_uploads([("crowd.zip", data)], tmp_path / "m", max_entries=20)
        assert "crowd.zip" in str(err.value) and "30 entries" in str(err.value) and "max_entries" in str(err.value)
        _nothing_left(tmp_path, tmp_path / "m")

    def test_refusal_keeps_the_files_already_in_dest(self, tmp_path):
        dest = tmp_path / "m"
        save_uploads([("first.png", PNG)], dest)
        bomb = _zip({"zeros.png": b"\0" * (20 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
        with pytest.raises(DataLoadError, match="bomb.zip"):
            save_uploads([("ok.png", PNG), ("bomb.zip", bomb)], dest)
        assert _names(dest) == ["first.png"]  # ok.png of the refused upload was not moved in
        assert _names(tmp_path) == ["m"]  # no temporary folder left


class TestZipNames:
    def test_duplicate_base_names_in_different_folders_are_all_kept(self, tmp_path):
        data = _zip({"cats/a.png": b"1", "dogs/a.png": b"2", "x/dogs/a.png": b"3", "a.png": b"4"})
        out = save_uploads([("pets.zip", data)], tmp_path / "m")
        names = _names(out)
        assert len(names) == 4
        assert (out / "a.png").read_bytes() == b"1"  # the first keeps its name
        assert (out / "dogs__a.png").read_bytes() == b"2"  # later ones: folder prefix
        rest = {(out / n).read_bytes() for n in names if n not in ("a.png", "dogs__a.png")}
        assert rest == {b"3", b"4"}
        assert all(n.endswith("__a.png") for n in names if n != "a.png")

    def test_duplicate_names_with_captions_are_refused_naming_both(self, tmp_path):
        meta = b'{"file_name": "a.png", "text": "a cat"}\n'
        data = _zip({"cats/a.png": PNG, "dogs/a.png": PNG, "metadata.jsonl": meta})
        with pytest.raises(DataLoadError) as err:
            save_uploads([("pets.zip", data)], tmp_path / "m")
        msg = str(err.value)
        assert "a.png" in msg and "cats/a.png" in msg and "dogs/a.png" in msg and "captions" in msg
        _nothing_left(tmp_path, tmp_path / "m")

    def test_two_metadata_files_are_refused_naming_both(self, tmp_path):
        data = _zip({"a/metadata.jsonl": b"{}\n", "b/metadata.jsonl": b"{}\n", "a/x.png": PNG})
        with pytest.raises(DataLoadError) as err:
            save_uploads([("meta.zip", data)], tmp_path / "m")
        assert "a/metadata.jsonl" in str(err.value) and "b/metadata.jsonl" in str(err.value)

    @pytest.mark.parametrize("name", ["../../x.png", "/etc/x.png", "..\\..\\x.png", "C:\\evil\\x.png",
                                      "a/../../../x.png"])
    def test_traversal_and_absolute_names_stay_inside(self, tmp_path, name):
        dest = tmp_path / "deep" / "up" / "m"
        out = save_uploads([("t.zip", _zip({name: PNG}))], dest)
        assert _names(out) == ["x.png"]
        assert (out / "x.png").read_bytes() == PNG
        everything = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert everything == [out / "x.png"]

    @pytest.mark.parametrize("name", ["../../x.png", "/etc/x.png", "sub/../x.png"])
    def test_uploaded_file_names_with_path_parts_stay_inside(self, tmp_path, name):
        out = save_uploads([(name, PNG)], tmp_path / "a" / "m")
        assert _names(out) == ["x.png"]
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == [out / "x.png"]

    def test_dot_names_are_skipped(self, tmp_path):
        out = save_uploads([("z.zip", _zip({"..": b"x", ".": b"y", "../.png": b"z", "ok.png": PNG}))], tmp_path / "m")
        assert _names(out) == ["ok.png"]

    @staticmethod
    def _symlink_zip(*, with_image: bool) -> bytes:
        """A zip holding a symbolic-link entry "evil.png" -> /etc/passwd (and "good.png")."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            link = zipfile.ZipInfo("evil.png")
            link.create_system = 3
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "/etc/passwd")
            if with_image:
                zf.writestr("good.png", PNG)
        return buf.getvalue()

    def test_symlink_entries_are_skipped(self, tmp_path):
        out = save_uploads([("links.zip", self._symlink_zip(with_image=True))], tmp_path / "m")
        assert _names(out) == ["good.png"]
        assert not (out / "evil.png").is_symlink()

    def test_only_symlinks_is_no_image(self, tmp_path):
        with pytest.raises(DataLoadError) as err:
            save_uploads([("links.zip", self._symlink_zip(with_image=False))], tmp_path / "m")
        assert "evil.png (symbolic link)" in str(err.value)

    def test_names_in_any_encoding(self, tmp_path):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("ünïcödé/ĉat.png", PNG)  # UTF-8 flag set by zipfile
            zf.writestr("ctrl\x07name.png", PNG)  # a control character
        data = bytearray(buf.getvalue())
        # an entry as older zip tools write it: UTF-8 bytes without the UTF-8 flag (read as cp437)
        raw = "日本.png".encode("utf-8")
        placeholder = b"abcdef.png"
        assert len(raw) == len(placeholder)
        blob = _zip({placeholder.decode(): PNG}).replace(placeholder, raw)
        assert "日本.png" not in zipfile.ZipFile(io.BytesIO(blob)).namelist()  # mojibake as zipfile reads it
        out = save_uploads([("u.zip", bytes(data)), ("v.zip", blob)], tmp_path / "m")
        names = _names(out)
        assert "ĉat.png" in names and "ctrl_name.png" in names
        assert "日本.png" in names, names
        assert all((out / n).read_bytes() == PNG for n in names)

    def test_surrogate_names_from_the_browser(self, tmp_path):
        out = save_uploads([("bad\udce9name.png", PNG)], tmp_path / "m")
        assert _names(out) == ["bad_name.png"]

    def test_very_long_names_are_shortened(self, tmp_path):
        out = save_uploads([("z.zip", _zip({"é" * 300 + ".png": PNG}))], tmp_path / "m")
        (name,) = _names(out)
        assert name.endswith(".png") and len(name.encode("utf-8")) <= 200


class TestBrokenUploads:
    def test_corrupt_zip(self, tmp_path):
        with pytest.raises(DataLoadError) as err:
            save_uploads([("broken.zip", b"PK\x03\x04 this is not really a zip")], tmp_path / "m")
        assert "broken.zip" in str(err.value) and "corrupt" in str(err.value)
        _nothing_left(tmp_path, tmp_path / "m")

    def test_truncated_zip(self, tmp_path):
        data = _zip({"a.png": PNG * 100}, compression=zipfile.ZIP_DEFLATED)
        with pytest.raises(DataLoadError, match="cut.zip"):
            save_uploads([("cut.zip", data[: len(data) // 2])], tmp_path / "m")
        _nothing_left(tmp_path, tmp_path / "m")

    def test_empty_upload_list(self, tmp_path):
        with pytest.raises(DataLoadError, match="expected at least one image or zip file, got none"):
            save_uploads([], tmp_path / "m")
        assert not (tmp_path / "m").exists()

    def test_empty_zip_file(self, tmp_path):
        with pytest.raises(DataLoadError, match=r"upload empty\.zip: expected a zip archive, got an empty file"):
            save_uploads([("empty.zip", b"")], tmp_path / "m")

    def test_zip_without_images(self, tmp_path):
        with pytest.raises(DataLoadError) as err:
            save_uploads([("notes.zip", _zip({"notes.txt": b"x", "sub/": b""}))], tmp_path / "m")
        assert "notes.zip: no image inside" in str(err.value)
        _nothing_left(tmp_path, tmp_path / "m")

    def test_empty_image_file(self, tmp_path):
        with pytest.raises(DataLoadError) as err:
            save_uploads([("blank.png", b"")], tmp_path / "m")
        assert "blank.png (empty file)" in str(err.value)

    def test_encrypted_entry(self, tmp_path):
        data = bytearray(_zip({"secret.png": PNG}))
        for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
            at = data.find(sig)
            flags = struct.unpack_from("<H", data, at + off)[0] | 0x1
            struct.pack_into("<H", data, at + off, flags)
        with pytest.raises(DataLoadError, match=r"enc\.zip: entry 'secret\.png' is encrypted"):
            save_uploads([("enc.zip", bytes(data))], tmp_path / "m")

    def test_dest_is_a_file(self, tmp_path):
        (tmp_path / "m").write_text("a file")
        with pytest.raises(DataLoadError, match="to be a folder"):
            save_uploads([("a.png", PNG)], tmp_path / "m")


# =========================================================================== pages


def _make_run(folder: Path, *, n: int = 8, log_volume: np.ndarray | None = None, seed: int = 0) -> Run:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, dtype=np.int8), np.zeros(n - n // 2, dtype=np.int8)]
    terms = rng.gamma(2.0, 1.0, size=(n, len(TIMESTEPS), *SHAPE)).astype(np.float32)
    terms[labels == 1, 1] *= 0.8
    return write_run(folder, terms=terms, influence=rng.normal(size=(n, *SHAPE)).astype(np.float32),
                     log_volume=rng.normal(size=n) if log_volume is None else log_volume, labels=labels,
                     timesteps=TIMESTEPS, pfami=rng.normal(size=n))


def _set_run_json(run_dir: Path, **changes) -> None:
    path = Path(run_dir) / "run.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """LDMINV_HOME with one complete run (the active one, via LDMINV_RUN)."""
    run = _make_run(tmp_path / "runs" / "good")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    return {"root": tmp_path, "runs": tmp_path / "runs", "run": str(Path(run.path).resolve())}


def _model_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/model_data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _one_error(at: AppTest, active: str) -> str:
    """The page ran without a traceback, shows exactly one error box and kept the active run."""
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert at.session_state["active_run"] == active
    assert not at.get("expander") or all("Details" not in e.label for e in at.expander)  # no traceback
    return errors[0]


def _open_by_path(at: AppTest, path: str) -> str:
    at.text_input(key="runs_open_path").input(path)
    at.button(key="runs_open_path_btn").click().run()
    return path


class TestModelPageActions:
    def test_open_by_path_a_file(self, home, tmp_path):
        at = _model_page()
        target = tmp_path / "notes.txt"
        target.write_text("x")
        _open_by_path(at, str(target))
        msg = _one_error(at, home["run"])
        assert str(target) in msg and "expected a run folder, got a file" in msg
        assert at.text_input(key="runs_open_path").value == str(target)  # the typed path is kept

    def test_open_by_path_missing(self, home, tmp_path):
        at = _model_page()
        missing = str(tmp_path / "no" / "such" / "run")
        _open_by_path(at, missing)
        msg = _one_error(at, home["run"])
        assert missing in msg and "does not exist" in msg
        assert at.text_input(key="runs_open_path").value == missing

    def test_open_by_path_empty(self, home):
        at = _model_page()
        _open_by_path(at, "   ")
        assert "got an empty field" in _one_error(at, home["run"])

    def test_open_by_path_garbage_run_json(self, home):
        broken = home["runs"] / "garbage"
        broken.mkdir()
        (broken / "run.json").write_text("{ this is : not json")
        at = _model_page()
        _open_by_path(at, str(broken))
        msg = _one_error(at, home["run"])
        assert "garbage" in msg and "run.json" in msg
        assert at.text_input(key="runs_open_path").value == str(broken)
        # it is listed as broken, and cannot be opened or resumed from the list
        at.selectbox(key="runs_pick").select(str(broken.resolve())).run()
        assert at.button(key="runs_open").disabled and at.button(key="runs_resume").disabled

    def test_open_and_resume_an_unfinished_run(self, home):
        unfinished = home["runs"] / "unfinished"
        good = Run.open(home["run"])
        writer = RunWriter(unfinished, settings={"synthetic": True}, samples=good.samples)
        writer.close()
        at = _model_page()
        _open_by_path(at, str(unfinished))
        msg = _one_error(at, home["run"])
        assert "unfinished" in msg and ("finished stage" in msg or "unfinished" in msg)
        at.selectbox(key="runs_pick").select(str(unfinished.resolve())).run()
        assert at.button(key="runs_open").disabled
        at.button(key="runs_resume").click().run()
        msg = _one_error(at, home["run"])
        assert "Cannot resume" in msg and "run.json" in msg and "config" in msg
        assert at.session_state["analysis_job"] is None
        assert at.selectbox(key="runs_pick").value == str(unfinished.resolve())

    def test_delete_error_from_the_core_is_an_error_box(self, home):
        busy = home["runs"] / "busy"
        writer = RunWriter(busy, settings={"synthetic": True}, samples=Run.open(home["run"]).samples)
        try:
            at = _model_page()
            at.selectbox(key="runs_pick").select(str(busy.resolve())).run()
            at.button(key="runs_delete").click().run()
            at.button(key="runs_delete_confirm").click().run()
            msg = _one_error(at, home["run"])
            assert "Cannot delete" in msg and "busy" in msg and "being written" in msg
            assert busy.is_dir() and (busy / "run.json").is_file()
        finally:
            writer.close()

    def test_delete_of_a_run_holding_foreign_files_is_an_error_box(self, home):
        mixed = home["runs"] / "mixed"
        _make_run(mixed, seed=5)
        (mixed / "notes_of_mine.txt").write_text("keep me")
        at = _model_page()
        at.selectbox(key="runs_pick").select(str(mixed.resolve())).run()
        at.button(key="runs_delete").click().run()
        at.button(key="runs_delete_confirm").click().run()
        assert not at.exception, [e.value for e in at.exception]
        if mixed.exists():  # the core refuses folders holding files it does not own
            msg = _one_error(at, home["run"])
            assert "Cannot delete" in msg and "notes_of_mine.txt" in msg
            assert (mixed / "notes_of_mine.txt").read_text() == "keep me"

    def test_a_linked_run_outside_the_runs_folder_is_never_deleted(self, home, tmp_path):
        outside = tmp_path / "elsewhere" / "victim"
        _make_run(outside, seed=3)
        (outside / "my_thesis.txt").write_text("precious")
        (home["runs"] / "linked").symlink_to(outside, target_is_directory=True)
        at = _model_page()
        target = str(outside.resolve())
        assert f"linked (link → {target}) (complete)" in at.selectbox(key="runs_pick").options
        at.selectbox(key="runs_pick").select(target).run()
        assert at.selectbox(key="runs_pick").value == target
        assert not at.exception
        assert at.button(key="runs_delete").disabled
        assert any("symbolic link" in c.value and "linked" in c.value for c in at.caption)
        # a stale confirmation (or a crafted session) is refused at the last step too
        at.session_state["confirm_delete"] = target
        at.run()
        at.button(key="runs_delete_confirm").click().run()
        msg = _one_error(at, home["run"])
        assert "not deleting" in msg and target in msg
        assert (outside / "my_thesis.txt").read_text() == "precious" and (outside / "run.json").is_file()
        assert (home["runs"] / "linked").is_symlink()
        # it can still be opened (read-only)
        at.button(key="runs_open").click().run()
        assert not at.exception and not at.error
        assert at.session_state["active_run"] == target

    def test_check_deletable_refuses_a_symlink(self, home, tmp_path):
        outside = tmp_path / "other"
        _make_run(outside, seed=4)
        link = home["runs"] / "alias"
        link.symlink_to(outside, target_is_directory=True)
        at = _model_page()
        at.session_state["confirm_delete"] = str(link)  # the link itself, not its target
        at.run()
        at.button(key="runs_delete_confirm").click().run()
        msg = _one_error(at, home["run"])
        assert "symbolic link" in msg and str(link) in msg
        assert link.is_symlink() and (outside / "run.json").is_file()

    def test_a_model_folder_without_unet_is_named_before_anything_runs(self, home, tmp_path, tiny_image_dirs):
        model = tmp_path / "half_model"
        (model / "vae").mkdir(parents=True)
        (model / "vae" / "config.json").write_text("{}")
        at = _model_page()
        at.radio(key="new_model_kind").set_value("Local folder").run()
        at.text_input(key="new_model_path").input(str(model))
        at.text_input(key="new_members_path").input(str(tiny_image_dirs[0]))
        at.text_input(key="new_heldout_path").input(str(tiny_image_dirs[1]))
        at.run()
        # named as soon as it is entered (the loader's message), before any button is pressed
        msg = _one_error(at, home["run"])
        assert msg.startswith("This model cannot be analysed: ") and str(model) in msg and "unet/" in msg
        assert at.text_input(key="new_model_path").value == str(model)
        # nothing can be estimated or started on it
        assert at.button(key="new_estimate").disabled and at.button(key="new_start").disabled
        assert at.session_state["analysis_job"] is None

    def test_estimate_with_an_image_folder_without_images(self, home, tmp_path, tiny_uncond_model, tiny_image_dirs):
        empty = tmp_path / "no_images"
        empty.mkdir()
        (empty / "readme.txt").write_text("nothing to see")
        at = _model_page()
        at.radio(key="new_model_kind").set_value("Local folder").run()
        at.text_input(key="new_model_path").input(str(tiny_uncond_model))
        at.text_input(key="new_members_path").input(str(tiny_image_dirs[0]))
        at.text_input(key="new_heldout_path").input(str(empty))
        at.button(key="new_estimate").click().run()
        msg = _one_error(at, home["run"])
        assert str(empty) in msg and "no usable image" in msg
        assert at.text_input(key="new_heldout_path").value == str(empty)

    def test_upload_of_a_corrupt_zip(self, home):
        at = _model_page()
        at.radio(key="new_members_mode").set_value("Upload").run()
        uploader = next(u for u in at.get("file_uploader") if "Members" in u.label)
        uploader.set_value(("photos.zip", b"PK\x03\x04 garbage, not a zip", "application/zip")).run()
        msg = _one_error(at, home["run"])
        assert "Members upload" in msg and "photos.zip" in msg and "corrupt" in msg
        assert at.radio(key="new_members_mode").value == "Upload"
        assert not (home["runs"] / "uploads").exists() or not any(
            p.is_file() for p in (home["runs"] / "uploads").rglob("*"))

    def test_upload_of_a_zip_bomb(self, home):
        at = _model_page()
        at.radio(key="new_heldout_mode").set_value("Upload").run()
        bomb = _zip({"zeros.png": b"\0" * (20 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
        uploader = next(u for u in at.get("file_uploader") if "Held-out" in u.label)
        uploader.set_value(("bomb.zip", bomb, "application/zip")).run()
        msg = _one_error(at, home["run"])
        assert "Held-out upload" in msg and "bomb.zip" in msg and "zip bomb" in msg

    def test_good_upload_with_colliding_names_is_saved_once(self, home):
        at = _model_page()
        at.radio(key="new_members_mode").set_value("Upload").run()
        data = _zip({"cats/a.png": PNG, "dogs/a.png": PNG, "../../../evil.png": PNG})
        uploader = next(u for u in at.get("file_uploader") if "Members" in u.label)
        uploader.set_value(("pets.zip", data, "application/zip")).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        saved = [c.value for c in at.caption if c.value.startswith("Saved to ")]
        assert len(saved) == 1
        folder = Path(saved[0].removeprefix("Saved to "))
        assert folder.is_relative_to(home["runs"] / "uploads")
        assert _names(folder) == ["a.png", "dogs__a.png", "evil.png"]
        stamp = (folder / "a.png").stat().st_mtime_ns
        at.run()  # a rerun does not unpack the archive again
        assert (folder / "a.png").stat().st_mtime_ns == stamp
        assert not [p for p in home["root"].rglob("*evil*") if p.parent != folder]

    def test_bad_run_name(self, home, tiny_image_dirs):
        at = _model_page()
        at.text_input(key="new_run_name").input("../outside")
        at.button(key="new_estimate").click().run()
        msg = _one_error(at, home["run"])
        assert "run name" in msg and "../outside" in msg
        assert at.text_input(key="new_run_name").value == "../outside"


# =========================================================================== warnings


def _page_warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


class TestRunWarnings:
    def test_recorded_warnings_on_every_page(self, tmp_path, monkeypatch):
        run = _make_run(tmp_path / "runs" / "warned")
        notes = ["3 images appear in both splits (allowed with --allow-duplicates): m_001.png, m_002.png, h_004.png",
                 "metadata.jsonl: 2 captions name no image"]
        _set_run_json(run.path, warnings=notes)
        monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
        monkeypatch.setenv("LDMINV_RUN", str(run.path))
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        for page in PAGES:
            at.switch_page(page).run()
            assert not at.exception, (page, [e.value for e in at.exception])
            shown = _page_warnings(at)
            for note in notes:
                assert any(note in w for w in shown), (page, shown)

    @pytest.mark.parametrize("value, expected", [
        ({"oops": 1}, "got a dict"),
        (["fine", 3, None], "got a list with 2 entries that are not strings"),
        (42, "got a int"),
    ])
    def test_malformed_warnings_give_one_generic_warning(self, tmp_path, monkeypatch, value, expected):
        run = _make_run(tmp_path / "runs" / "odd")
        _set_run_json(run.path, warnings=value)
        monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
        monkeypatch.setenv("LDMINV_RUN", str(run.path))
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        assert not at.exception, [e.value for e in at.exception]
        shown = _page_warnings(at)
        generic = [w for w in shown if "malformed" in w]
        assert len(generic) == 1 and expected in generic[0] and "run.json" in generic[0], shown
        if isinstance(value, list):
            assert any("fine" in w and "Analysis warning" in w for w in shown)

    def test_all_nan_log_volume_is_explained(self):
        """The banner on a run whose finished geometry has no finite log-volume (the core may
        also refuse such a run at open: then the next test's message is what the user sees)."""
        def page():
            from types import SimpleNamespace

            import numpy as np
            import pandas as pd

            from ldminv_app.banners import run_warnings_banner

            run = SimpleNamespace(path="/runs/nolv", settings={}, has_geometry=True,
                                  samples=pd.DataFrame({"log_volume": np.full(4, np.nan)}))
            run_warnings_banner(run)
            run_warnings_banner(SimpleNamespace(path="/runs/nocol", settings={}, has_geometry=True,
                                                   samples=pd.DataFrame({"path": ["a"]})))
            run_warnings_banner(SimpleNamespace(path="/runs/partial", settings={}, has_geometry=False,
                                                   samples=pd.DataFrame({"log_volume": np.full(4, np.nan)})))

        at = AppTest.from_function(page, default_timeout=TIMEOUT).run()
        assert not at.exception, [e.value for e in at.exception]
        shown = _page_warnings(at)
        assert len(shown) == 2, shown  # not for the partial run without geometry
        assert all("No log-volume values" in w and "quartile" in w for w in shown), shown

    def test_a_run_with_all_nan_log_volume_gives_a_message_not_a_traceback(self, tmp_path, monkeypatch):
        import pandas as pd

        run = _make_run(tmp_path / "runs" / "nolv")
        samples = pd.read_parquet(Path(run.path) / "samples.parquet")
        samples["log_volume"] = np.nan
        samples.to_parquet(Path(run.path) / "samples.parquet")
        monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
        monkeypatch.setenv("LDMINV_RUN", str(run.path))
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        for page in ("pages/findings.py", "pages/distortion.py"):
            settle(at.switch_page(page).run())  # the Findings page's sections come from the background
            assert not at.exception, (page, [e.value for e in at.exception])
            shown = " ".join(w.value for w in at.warning) + " ".join(e.value for e in at.error)
            assert "log_volume" in shown or "log-volume" in shown, (page, shown)

    def test_no_warnings_no_banner(self, home):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        assert not at.exception
        assert not [w for w in _page_warnings(at) if "Analysis warning" in w or "malformed" in w
                    or "No log-volume" in w]
