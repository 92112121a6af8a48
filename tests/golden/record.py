"""Golden reports of a small demo run: the numbers the text and JSON report and the HTML export
give for every protocol and attack. ``tests/e2e/test_golden_reports.py`` recomputes them and
compares; ``python tests/golden/record.py`` rewrites them (only when a change of numbers is
intended, and say so in the commit).

The run folder ``demo32`` holds the first 32 member and 32 held-out images of the bundled demo
analysed with every attack (``analyze --demo --limit 32 --attacks sima,pia,loss,secmi,pfami
--timesteps 0:100:25``); its cache is not kept, so every number is computed afresh.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


GOLDEN = Path(__file__).resolve().parent
RUN = GOLDEN / "demo32"
PROTOCOLS = ("standard", "paper", "honest")
ATTACKS = ("sima", "pia", "loss", "secmi", "pfami")
N_BOOT = 200
EXPORT_ATTACKS = ("sima", "pfami")

_SCRIPT = re.compile(r"<script\b.*?</script>|<style\b.*?</style>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")
_GENERATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


def run_copy(tmp: Path) -> Path:
    """A fresh copy of the golden run (no cache), so nothing computed earlier is reused."""
    dst = tmp / "demo32"
    shutil.copytree(RUN, dst, ignore=shutil.ignore_patterns(".ldminv-cache"))
    return dst


def reports(run: Path, protocol: str) -> tuple[str, str]:
    """``report --json`` and ``report`` (text) for every attack under ``protocol``, as the CLI
    prints them, the run's path replaced by RUN."""
    from ldminv_core.report import build_report, format_report
    data = build_report(run, protocol=protocol, n_boot=N_BOOT)
    as_json = json.dumps(data, indent=2, allow_nan=False) + "\n"
    as_text = format_report(data) + "\n"
    return as_json.replace(str(run), "RUN"), as_text.replace(str(run), "RUN")


def export_text(run: Path, protocol: str, attack: str) -> str:
    """The visible text of the HTML export (tables, cards, findings), one line per block; the
    time stamp and the run's path normalised."""
    from ldminv_app.html_report.document import build_html_report
    doc = build_html_report(run, attack=attack, protocol=protocol, n_boot=N_BOOT)
    body = _SCRIPT.sub(" ", doc)
    body = re.sub(r"</(p|div|tr|li|h\d|table|section|td|th)>", "\n", body, flags=re.I)
    text = html.unescape(_TAG.sub(" ", body))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "\n".join(line for line in lines if line)
    text = _GENERATED.sub("GENERATED", text).replace(str(run), "RUN")
    return text + "\n"


def golden_texts(run: Path) -> dict[str, str]:
    """Every golden file's name and expected text, computed from ``run``."""
    out = {}
    for p in PROTOCOLS:
        out[f"report_{p}.json"], out[f"report_{p}.txt"] = reports(run, p)
    for p in PROTOCOLS:
        for a in EXPORT_ATTACKS:
            out[f"export_{p}_{a}.txt"] = export_text(run, p, a)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        texts = golden_texts(run_copy(Path(tmp)))
    for name, text in texts.items():
        (GOLDEN / name).write_text(text)
        print(f"wrote {name} ({len(text)} chars)")
    sys.exit(0)
