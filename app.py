"""ldminv dashboard: audit membership leakage of latent diffusion models.

Run with ``streamlit run app.py``. It opens on the built-in demo (computed once on first
start, then cached on disk); set ``LDMINV_RUN=<run folder>`` to open another run instead.
Pages live in ``pages/``, each starting with ``ldminv_app.frame.page_frame()`` (start-up run,
sidebar with the active run and the shared attack / timestep); shared state, caching and
figures live in ``ldminv_app``.
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path

import streamlit as st

from ldminv_app import shutdown

st.set_page_config(
    page_title="ldminv · latent diffusion membership audit",
    # an emoji: the browser draws it itself (a data: URL). A ":material/...:" icon is fetched from
    # Google's font host on every page load (fails offline, tells a third party who audits what).
    page_icon="🛡️",
    layout="wide",
    initial_sidebar_state="expanded",
)

_HERE = Path(__file__).resolve().parent


@st.cache_resource(show_spinner=False)
def _preimport() -> threading.Thread:
    """Import the heavy modules some pages need (torch, through the geometry module) in the
    background once per server, so the first visit of such a page does not wait for them."""
    def work() -> None:
        try:
            importlib.import_module("ldminv_core.geometry")
        except Exception:  # noqa: BLE001 - the page that needs it reports the error
            pass
    t = threading.Thread(target=work, name="ldminv-preimport", daemon=True)
    t.start()
    shutdown.register_thread(t, "the import of torch")  # a stop mid-import must not abort the process
    return t


_preimport()
PAGES = [
    st.Page("pages/findings.py", title="Findings", icon=":material/fact_check:", default=True),
    st.Page("pages/model_data.py", title="Model & data", icon=":material/dataset:"),
    st.Page("pages/distortion.py", title="Distortion", icon=":material/blur_on:"),
    st.Page("pages/dimensions.py", title="Dimensions", icon=":material/grid_on:"),
    st.Page("pages/masks_roc.py", title="Masks & ROC", icon=":material/show_chart:"),
    st.Page("pages/latent_map.py", title="Latent map", icon=":material/scatter_plot:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
]
# Optional pages are added when their file is present.
if (_HERE / "pages" / "export.py").is_file():
    PAGES.append(st.Page("pages/export.py", title="Export", icon=":material/download:"))

# Every page renders the shared frame (start-up run, sidebar) itself: ldminv_app.frame.page_frame.
st.navigation(PAGES).run()
