"""ldminv dashboard: audit membership leakage of latent diffusion models.

Run with ``streamlit run app.py``. It opens on the built-in demo (cached on disk); on the very
first start it computes a quick preview of the demo in seconds and then the demo itself, each in a
process of its own (``ldminv_app.startup``). Set ``LDMINV_RUN=<run folder>`` to open another run
instead.

This file is read twice. ``streamlit run app.py`` first imports it to find the app it serves (the
``st.App`` below, whose start-up begins the first start's preview as the server starts, before any
browser connects: :func:`ldminv_app.startup.server_lifespan`); then every session runs it as its
script (``__name__ == "__main__"``, :func:`main`).

Pages live in ``pages/``, each starting with ``ldminv_app.frame.page_frame()`` (start-up run,
sidebar with the active run and the shared attack / timestep); shared state, caching and figures
live in ``ldminv_app``.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ldminv_app import startup
from ldminv_app.activity import page_running
from ldminv_app.preimport import first_page_drawn, start_preimport

_HERE = Path(__file__).resolve().parent


def main() -> None:
    """The script of every session: the first start's preview (when it is needed), then the pages."""
    st.set_page_config(
        page_title="ldminv · latent diffusion membership audit",
        # an emoji: the browser draws it itself (a data: URL). A ":material/...:" icon is fetched from
        # Google's font host on every page load (fails offline, tells a third party who audits what).
        page_icon="🛡️",
        layout="wide",
        initial_sidebar_state="expanded",
    )
    start_preimport()  # once per server (the server's start-up may have begun it)
    pages = [
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
        pages.append(st.Page("pages/export.py", title="Export", icon=":material/download:"))
    page = st.navigation(pages)  # the menu, also beside "Preparing the demo"
    if startup.needs_preparation():  # the first start: the preview, before any page runs
        startup.prepare_demo()  # reruns the app once the preview has landed; returns only on failure
    # Every page renders the shared frame (start-up run, sidebar) itself: ldminv_app.frame.page_frame.
    with page_running():  # no background warm-up task starts while the page is drawn
        page.run()
    first_page_drawn()  # what the first page did not need (torch) is imported from now on


if __name__ == "__main__":  # a session's script run
    main()
else:  # `streamlit run app.py` looking for the app it serves
    app = st.App(__file__, lifespan=startup.server_lifespan)
