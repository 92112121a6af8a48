"""What the page tests (``streamlit.testing``'s ``AppTest``) share: the dashboard's pages, the tiny
model their runs are computed with, and readers of the plotly figures a page shows.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tiny_models import tiny_scheduler, tiny_unet, tiny_vae

APP = str(Path(__file__).resolve().parents[2] / "app.py")
#: The dashboard's pages that show a run (the Export page aside).
PAGES = (
    "pages/findings.py",
    "pages/model_data.py",
    "pages/distortion.py",
    "pages/dimensions.py",
    "pages/masks_roc.py",
    "pages/latent_map.py",
    "pages/compare.py",
)
LATENT_CHANNELS = 2  # d = 2 * 4 * 4 = 32 keeps the exact Jacobian cheap


def build_model(folder: Path, *, unet_channels: int = LATENT_CHANNELS) -> Path:
    """A tiny random diffusers pipeline folder (vae/ 1x16x16 -> LATENT_CHANNELS x4x4, unet/,
    scheduler/) saved under ``folder``; returns ``folder``."""
    tiny_vae(image_channels=1, latent_channels=LATENT_CHANNELS, seed=0).save_pretrained(folder / "vae")
    tiny_unet(in_channels=unet_channels, seed=1).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    return folder


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by title."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = (spec["layout"].get("title") or {}).get("text") or f"untitled-{len(out)}"
        out[title] = spec
    return out


def arr(value) -> np.ndarray:
    """A figure array as plotly serialises it: a list, or a base64 typed array {dtype, bdata}."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value else out
    return np.asarray(value)


def open_tab(at: AppTest, key: str, label: str) -> AppTest:
    """Open the tab ``label`` of the tabs with session key ``key`` (``st.tabs(on_change="rerun")``:
    only the open tab is drawn), as a click on it does, and rerun until its background sections are
    drawn (:func:`settle`)."""
    at.session_state[key] = label
    return settle(at.run())


def settle(at: AppTest) -> AppTest:
    """Rerun once the page's background sections (``ldminv_app.lazy``: the Findings page's shift
    check, findings, every-attack tables, agreement, exposure) have their numbers: a page drawn
    before they were ready shows a "computing in the background" line in their place."""
    from ldminv_app import lazy

    for _ in range(5):
        if not any(lazy.PENDING_WORDS in c.value for c in at.caption):
            break
        assert lazy.wait(300), "the background sections did not finish within 300 s"
        at.run()
    return at



def open_app(run_path, home, monkeypatch, *, timeout: float = 180) -> AppTest:
    """The dashboard on the run at ``run_path`` (``LDMINV_HOME=home``), its background sections
    settled (:func:`settle`), with no exception on the page."""
    monkeypatch.setenv("LDMINV_HOME", str(home))
    monkeypatch.setenv("LDMINV_RUN", str(run_path))
    at = settle(AppTest.from_file(APP, default_timeout=timeout).run())
    assert not at.exception, [e.value for e in at.exception]
    return at
