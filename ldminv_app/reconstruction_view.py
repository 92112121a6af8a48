"""The Distortion page's reconstruction (decode of a sample's stored latent), computed in the
background (:mod:`ldminv_app.lazy`): the first one loads the run's model (3.2 s on the demo, most of
it importing diffusers), so the sample viewer shows the image, its numbers and heatmaps at once and
the reconstruction fills in by itself. Once the model is loaded, a sample's reconstruction is one
decode, drawn in the same run. The model is usually loaded before the page asks
(:func:`ldminv_app.cache.preload_model_size`). A model that cannot be loaded (a moved folder) hides
the reconstruction with the error in its place; the viewer goes on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from . import cache, lazy, notices

if TYPE_CHECKING:
    from ldminv_core.runs import Run

__all__ = ["reconstruction_job", "reconstruction_section"]

CAPTION = "reconstruction: decode(stored latent)"


def reconstruction_job(run: Run, index: int) -> tuple[tuple, object]:
    """(key, callable) of sample row ``index``'s reconstruction: the callable returns (uint8
    (H, W, 3), None), or (None, the exception) when the model or latent cannot be read."""
    key = ("reconstruction", *cache.run_key(run.path), int(index))

    def compute() -> tuple[np.ndarray | None, Exception | None]:
        try:
            return cache.reconstruction(run, int(index)), None
        except Exception as exc:  # noqa: BLE001 - shown in its place, the viewer goes on
            return None, exc
    return key, compute


def reconstruction_section(run: Run, index: int) -> None:
    """The reconstruction of sample row ``index``: at once when the model is loaded (a decode), else
    a "computing" line until it is ready."""
    key, fn = reconstruction_job(run, index)
    if cache.model_loaded(run):
        lazy.results().fill(key, fn)  # a decode: no second run of the page for it

    def draw(got: dict) -> None:
        recon, exc = got[key]
        if exc is not None:
            notices.show_error(exc, what="Reconstruction unavailable")
        else:
            st.image(recon, caption=CAPTION, width="stretch")

    lazy.section("reconstruction", [(key, fn)], draw, what="The reconstruction (the model loads once)")
