"""The golden reports: the text and JSON report for the three protocols and every attack, and the
HTML export's visible numbers, recomputed from the committed demo run ``tests/golden/demo32`` and
compared character for character with the files recorded by ``tests/golden/record.py``. Any
change of a reported number, wording or layout fails here and must be recorded on purpose."""
from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("golden_record", GOLDEN / "record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, str]:
    return record.golden_texts(record.run_copy(tmp_path_factory.mktemp("golden")))


def test_every_golden_file_is_recomputed(texts):
    on_disk = sorted(p.name for p in GOLDEN.iterdir() if p.suffix in (".json", ".txt"))
    assert sorted(texts) == on_disk
    assert len(on_disk) == 3 * 2 + 3 * len(record.EXPORT_ATTACKS)


@pytest.mark.parametrize("name", sorted(
    [f"report_{p}.{ext}" for p in record.PROTOCOLS for ext in ("json", "txt")]
    + [f"export_{p}_{a}.txt" for p in record.PROTOCOLS for a in record.EXPORT_ATTACKS]
))
def test_golden_file_identical(texts, name):
    expected = (GOLDEN / name).read_text()
    got = texts[name]
    if got != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), got.splitlines(keepends=True),
            fromfile=f"golden/{name}", tofile="recomputed", n=1))
        pytest.fail(f"{name} differs from the golden file:\n{diff[:4000]}")


def test_golden_reports_cover_every_attack_and_protocol():
    import json
    for p in record.PROTOCOLS:
        data = json.loads((GOLDEN / f"report_{p}.json").read_text())
        assert data["protocol"]["name"] == p
        assert sorted(data["attacks"]) == sorted(record.ATTACKS)
