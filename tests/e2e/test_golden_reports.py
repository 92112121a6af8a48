"""The golden reports: the text and JSON report for the three protocols and every attack, and the
HTML export's visible numbers, recomputed from the committed demo run ``tests/golden/demo32`` and
compared with the files recorded by ``tests/golden/record.py``: the text files character for
character; the JSON reports key for key and string for string, their floats to 1e-9 relative (the
blind baseline's fitted coefficients move in the last bits between CPUs, as BLAS sums in another
order; every number the text shows is still compared exactly). Any change of a reported number,
wording or layout fails here and must be recorded on purpose."""
from __future__ import annotations

import difflib
import importlib.util
import json
import math
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


def _json_differences(expected, got, where: str = "$") -> list[str]:
    """Where two parsed JSON values differ: types, keys, strings and ints exactly, floats to 1e-9
    relative (NaN equals NaN)."""
    if isinstance(expected, float) or isinstance(got, float):
        if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and type(expected) is type(got):
            same = (math.isnan(expected) and math.isnan(got)) or math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-12)
            return [] if same else [f"{where}: {expected!r} != {got!r}"]
        return [f"{where}: {expected!r} != {got!r}"]
    if type(expected) is not type(got):
        return [f"{where}: {type(expected).__name__} != {type(got).__name__}"]
    if isinstance(expected, dict):
        if list(expected) != list(got):
            return [f"{where}: keys {list(expected)} != {list(got)}"]
        return [d for k in expected for d in _json_differences(expected[k], got[k], f"{where}.{k}")]
    if isinstance(expected, list):
        if len(expected) != len(got):
            return [f"{where}: {len(expected)} items != {len(got)}"]
        return [d for i, (e, g) in enumerate(zip(expected, got)) for d in _json_differences(e, g, f"{where}[{i}]")]
    return [] if expected == got else [f"{where}: {expected!r} != {got!r}"]


def test_json_comparison_catches_what_it_must():
    assert _json_differences({"a": [1.0, "x"]}, {"a": [1.0 + 1e-15, "x"]}) == []
    assert _json_differences({"a": 1.0}, {"a": 1.0 + 1e-6})
    assert _json_differences({"a": 1}, {"a": 2})
    assert _json_differences({"a": 1}, {"a": 1.0})
    assert _json_differences({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert _json_differences(["x"], ["y"])
    assert _json_differences([float("nan")], [float("nan")]) == []


@pytest.mark.parametrize("name", sorted(
    [f"report_{p}.{ext}" for p in record.PROTOCOLS for ext in ("json", "txt")]
    + [f"export_{p}_{a}.txt" for p in record.PROTOCOLS for a in record.EXPORT_ATTACKS]
))
def test_golden_file_identical(texts, name):
    expected = (GOLDEN / name).read_text()
    got = texts[name]
    if name.endswith(".json") and got != expected:
        problems = _json_differences(json.loads(expected), json.loads(got))
        if not problems:
            return
        pytest.fail(f"{name} differs from the golden file:\n" + "\n".join(problems[:40]))
    if got != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), got.splitlines(keepends=True),
            fromfile=f"golden/{name}", tofile="recomputed", n=1))
        pytest.fail(f"{name} differs from the golden file:\n{diff[:4000]}")


def test_golden_reports_cover_every_attack_and_protocol():
    for p in record.PROTOCOLS:
        data = json.loads((GOLDEN / f"report_{p}.json").read_text())
        assert data["protocol"]["name"] == p
        assert sorted(data["attacks"]) == sorted(record.ATTACKS)
