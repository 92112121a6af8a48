"""ldminv dashboard: audit membership leakage of latent diffusion models.

Run with ``streamlit run app.py``. It opens on the built-in demo (cached on disk); on the very
first start it computes a quick preview of the demo in seconds and then the demo itself, each in a
process of its own (``ldminv_app.startup``). Set ``LDMINV_RUN=<run folder>`` to open another run
instead. Pages live in ``pages/``, each starting with ``ldminv_app.frame.page_frame()`` (start-up
run, sidebar with the active run and the shared attack / timestep); shared state, caching and
figures live in ``ldminv_app``.
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path

import streamlit as st

from ldminv_app import shutdown, startup

st.set_page_config(
    page_title="ldminv · latent diffusion membership audit",
    # an emoji: the browser draws it itself (a data: URL). A ":material/...:" icon is fetched from
    # Google's font host on every page load (fails offline, tells a third party who audits what).
    page_icon="🛡️",
    layout="wide",
    initial_sidebar_state="expanded",
)

_HERE = Path(__file__).resolve().parent

#: What every page needs first (the evaluation layer, the views and their figures), then torch (the
#: geometry and reconstruction views): imported once per server in the background, so that no
#: page waits for them. On a first start they overlap the preview's own process.
_PREIMPORT = ("ldminv_core.evaluation", "ldminv_app.frame", "ldminv_app.findings_view", "ldminv_app.cards",
              "ldminv_app.agreement_view", "ldminv_app.exposure_view", "ldminv_app.lazy", "ldminv_app.figures",
              "plotly.graph_objects",
              "ldminv_core.geometry")


@st.cache_resource(show_spinner=False)
def _preimport() -> threading.Thread:
    """Import the modules of :data:`_PREIMPORT` in the background once per server."""
    def work() -> None:
        # at normal priority: a thread the OS has put aside while it holds the interpreter lock
        # would stall the page scripts waiting for that lock (the preview runs in its own process)
        for name in _PREIMPORT:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the page that needs it reports the error
                pass
    t = threading.Thread(target=work, name="ldminv-preimport", daemon=True)
    t.start()
    shutdown.register_thread(t, "the import of torch")  # a stop mid-import must not abort the process
    return t


_preimport()
if startup.needs_preparation():  # the first start: the preview, before any page runs
    startup.prepare_demo()  # reruns the app once the preview has landed; returns only on failure

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
