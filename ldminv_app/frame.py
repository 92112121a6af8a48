"""The frame every page script calls first: session state, start-up run, sidebar, notices and
banners, and the stop of a page that needs a run while none is open.
"""
from __future__ import annotations

import streamlit as st

from ldminv_core.runs import Run

from . import state
from .banners import partial_banner, require_geometry, run_warnings_banner
from .notices import guard, show_notice
from .sidebar import render_sidebar
from .startup import demo_pending, prepare_demo, preview_banner, startup_run

__all__ = ["page_frame", "require_run"]


def _use_app_navigation() -> None:
    """Make a page requested by URL on a fresh server run through app.py's ``st.navigation``.

    With a ``pages/`` folder next to app.py, Streamlit starts in its pages-folder mode and,
    until app.py has called ``st.navigation`` once, runs a page file requested by URL on its
    own (automatic navigation, no page titles or wide layout). Leaving that mode and rerunning
    runs app.py, which resolves the same page. Not done under ``streamlit.testing`` (AppTest
    runs page files directly by design).
    """
    try:
        from streamlit import config
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - other Streamlit layouts
        return
    if getattr(PagesManager, "uses_pages_directory", None) and not config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()


def page_frame(*, needs_run: bool = True, uses_timestep: bool = True) -> Run | None:
    """What every page shows around its content; call it first in each page script.

    Initialises the session state, opens the start-up run (LDMINV_RUN, else the cached demo),
    renders the sidebar (active run, shared attack and timestep) and any pending message.
    Each page renders the frame itself, so a page script also works on its own. When the page
    ``needs_run`` and none is open: computes the demo (progress bar) if it is pending, else
    explains where to get a run; then stops the script. ``uses_timestep`` False: nothing on the
    page depends on the sidebar's timestep, whose slider then reruns only itself.
    """
    _use_app_navigation()
    state.init_state()
    run = startup_run()
    with st.sidebar, guard("The sidebar failed"):
        render_sidebar(run, uses_timestep=uses_timestep)
    show_notice()
    if run is not None:
        preview_banner(run)
        partial_banner(run)
        with guard("The run's warnings cannot be shown"):
            run_warnings_banner(run)
    if run is None and needs_run:
        if demo_pending():
            prepare_demo()
        else:
            st.info("No run is open. Open or compute one on the Model & data page.")
            st.page_link("pages/model_data.py", label="Go to Model & data", icon=":material/dataset:")
        st.stop()
    return run


def require_run(*, needs_geometry: bool = True) -> Run:
    """``page_frame()`` for a page that needs a run: the frame, then the active run (the
    script stops when none is open, and, when ``needs_geometry``, while a partial run has no
    decoder geometry yet: :func:`require_geometry`)."""
    run = page_frame(needs_run=True)
    assert run is not None  # page_frame stops the script otherwise
    if needs_geometry:
        require_geometry(run)
    return run
