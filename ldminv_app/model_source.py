"""The Model & data page's model choice for a new analysis: the built-in demo, the shift demo, a
local diffusers folder, a hub id, a custom adapter (an adapter ``.py`` file plus an optional model
path: ``AnalyzeConfig.model_adapter`` / ``model``, as ``analyze --model-adapter FILE.py --model
PATH``) or a single-file checkpoint (a ``.safetensors`` file plus its config folder:
``AnalyzeConfig.model`` / ``model_config``, as ``analyze --model FILE --model-config DIR``).
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ldminv_core import demo

from . import model_summary as _summary
from .notices import guard

__all__ = ["ModelChoice", "MODEL_KINDS", "DEMO_KINDS", "model_choice", "show_summary"]

#: The radio's choices, in order.
MODEL_KINDS = ("Built-in demo", "Shift demo", "Local folder", "Hub id", "Custom adapter", "Single-file checkpoint")
#: The choices that fill in their own image folders.
DEMO_KINDS = ("Built-in demo", "Shift demo")

_SHIFT_HELP = ("Shift demo: the demo model on two folders of images it never saw (held-out footwear as 'members', "
               "held-out clothes as 'held-out'): pure distribution shift, no member at all, to see what the shift "
               "check says when the folders differ without the model. Custom adapter: a PyTorch model that is not a "
               "diffusers pipeline, through a Python file of yours (README, custom models). Single-file checkpoint: "
               "one .safetensors file as shared on model hubs, with a diffusers folder of the same model for its "
               "configs.")


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose.

    Attributes:
        kind: one of :data:`MODEL_KINDS`.
        model: ``AnalyzeConfig.model``: a folder, a hub id, a checkpoint file, or the path handed
            to an adapter ("" when none is given).
        adapter: ``AnalyzeConfig.model_adapter`` (the adapter file), or None.
        model_config: ``AnalyzeConfig.model_config`` (a checkpoint's config folder), or None.
        default_members, default_heldout: the image folders a demo fills in ("" otherwise).
    """

    kind: str
    model: str
    adapter: str | None = None
    model_config: str | None = None
    default_members: str = ""
    default_heldout: str = ""


def model_choice() -> ModelChoice:
    """The model radio and the inputs of the chosen kind, top to bottom."""
    kind = st.radio("Model", list(MODEL_KINDS), key="new_model_kind", horizontal=True, help=_SHIFT_HELP)
    if kind == "Built-in demo":
        model = str(demo.DEMO_MODEL_DIR)
        st.caption(f"Demo model: {model}")
        return ModelChoice(kind, model, default_members=str(demo.DEMO_MEMBERS_DIR),
                           default_heldout=str(demo.DEMO_HELDOUT_DIR))
    if kind == "Shift demo":
        model = str(demo.DEMO_MODEL_DIR)
        members = heldout = ""
        with guard("Shift demo folders"):
            shift_members, shift_heldout = demo.build_shift_demo_data()
            members, heldout = str(shift_members), str(shift_heldout)
            st.caption(f"Demo model: {model}. Both folders hold images the model never saw (footwear against "
                       "clothes): every difference the attacks find is distribution shift, which the Findings "
                       "page's shift check names. `python -m ldminv_core analyze --demo shift` runs the same.")
        return ModelChoice(kind, model, default_members=members, default_heldout=heldout)
    if kind == "Local folder":
        return ModelChoice(kind, st.text_input("Model folder", key="new_model_path",
                                               placeholder="diffusers pipeline folder with vae/, unet/, scheduler/"
                                               ).strip())
    if kind == "Hub id":
        return ModelChoice(kind, st.text_input("Hub id", key="new_model_hub",
                                               placeholder="CompVis/stable-diffusion-v1-4").strip())
    if kind == "Custom adapter":
        return _adapter_inputs(kind)
    return _single_file_inputs(kind)


def _adapter_inputs(kind: str) -> ModelChoice:
    a1, a2 = st.columns(2)
    adapter = a1.text_input(
        "Adapter file (.py)", key="new_model_adapter", placeholder="/path/to/my_adapter.py",
        help="A Python file defining build_adapter(model_path, *, device, dtype) that builds your model with your "
             "own code and returns a ModelAdapter (ldminv_core.models.custom_adapter); examples/ldm_light_adapter.py "
             "does this for the paper's ldm_light checkpoints.").strip()
    path = a2.text_input("Model path (optional)", key="new_model_adapter_path", placeholder="/path/to/checkpoints",
                         help="Handed to build_adapter as model_path (e.g. a folder of state dicts); "
                              "empty: None.").strip()
    st.caption("⚠️ Loading an adapter runs the Python code in that file on this machine, "
               "as `analyze --model-adapter` does: use only files you trust.")
    return ModelChoice(kind, path, adapter=adapter or None)


def _single_file_inputs(kind: str) -> ModelChoice:
    s1, s2 = st.columns(2)
    file = s1.text_input("Checkpoint file (.safetensors)", key="new_model_file",
                         placeholder="/path/to/v1-5-pruned-emaonly.safetensors",
                         help="One .safetensors file in the original Stability / BFL layout, as shared on model "
                              "hubs (pickled .ckpt files are refused, never unpickled).").strip()
    config = s2.text_input("Config folder", key="new_model_config", placeholder="/path/to/diffusers-folder",
                           help="A diffusers pipeline folder of the same model (its configs, tokenizers and "
                                "scheduler; components the file lacks come from its safetensors). The file is "
                                "converted once, offline, and cached under $LDMINV_HOME.").strip()
    return ModelChoice(kind, file, model_config=config or None)


def show_summary(choice: ModelChoice) -> bool:
    """The chosen model's summary table, or why it cannot be analysed
    (:func:`~ldminv_app.model_summary.model_summary`); False when nothing may start on it (a refused
    model, or a custom adapter without its file)."""
    if choice.kind == "Custom adapter" and not choice.adapter:
        st.info("Enter the adapter file: the model it builds is shown here before anything runs.")
        return False
    return _summary.model_summary(choice.model, adapter=choice.adapter, model_config=choice.model_config)
