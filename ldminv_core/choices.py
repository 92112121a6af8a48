"""The fixed choices of the analysis options, kept free of heavy imports so that the command line
can build its parser (and answer ``--help``) without importing torch."""
from __future__ import annotations

__all__ = ["INFLUENCE_METHODS", "RESIDUAL_DTYPES", "ATTACK_LABELS", "attack_label"]

#: Per-coordinate influence paths of ``analyze --influence``.
INFLUENCE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson")
#: Stored dtypes of ``residuals/<attack>.npy`` (``analyze --residual-dtype``).
RESIDUAL_DTYPES: tuple[str, ...] = ("float32", "float16")
#: Displayed attack names, the same in the CLI report, the HTML export and the dashboard (data:
#: run.json, CSV ``attack`` columns and report JSON, keep the machine names).
ATTACK_LABELS: dict[str, str] = {"sima": "SimA", "pia": "PIA", "loss": "Loss", "secmi": "SecMI", "pfami": "PFAMI"}


def attack_label(name: str) -> str:
    """Displayed name of an attack ("SimA", "PIA", ...); unknown names as they are."""
    return ATTACK_LABELS.get(name, name)
