"""The fixed choices of the analysis options, kept free of heavy imports so that the command line
can build its parser (and answer ``--help``) without importing torch."""
from __future__ import annotations

__all__ = [
    "INFLUENCE_METHODS", "RESIDUAL_DTYPES", "LATENT_KINDS", "LOG_VOLUME_KINDS", "PRESETS", "ATTACK_LABELS",
    "attack_label",
]

#: Per-coordinate influence paths of ``analyze --influence``.
INFLUENCE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson")
#: Stored dtypes of ``residuals/<attack>.npy`` (``analyze --residual-dtype``).
RESIDUAL_DTYPES: tuple[str, ...] = ("float32", "float16")
#: The analysed latent (``analyze --latent``): the encoder mean or a posterior sample seeded per
#: sample id (:mod:`ldminv_core.latents`).
LATENT_KINDS: tuple[str, ...] = ("mean", "sample")
#: What the per-sample log-volume sums (``analyze --log-volume``): the top-k log singular values,
#: or the whole spectrum, 0.5 * log det(J^T J).
LOG_VOLUME_KINDS: tuple[str, ...] = ("topk", "logdet")
#: Named settings one flag away (``analyze --preset NAME``); explicit options override them.
#: "sd-paper": the paper's Stable Diffusion code (mx-ethan-rao/VAE2Diffusion,
#: diffusers/src/mia): latents from ``latent_dist.sample()``, timesteps 0:200:10, k = 20
#: (METHOD.md: k = 20 at Stable Diffusion scale, kept for the top-k views), and the whole-spectrum
#: log-volume 0.5 * log det(J^T J) (stochastic Lanczos quadrature where J is not built).
PRESETS: dict[str, dict] = {
    "sd-paper": {"latent": "sample", "timesteps": "0:200:10", "topk": 20, "log_volume": "logdet"},
}
#: Displayed attack names, the same in the CLI report, the HTML export and the dashboard (data:
#: run.json, CSV ``attack`` columns and report JSON, keep the machine names).
ATTACK_LABELS: dict[str, str] = {"sima": "SimA", "pia": "PIA", "loss": "Loss", "secmi": "SecMI", "pfami": "PFAMI"}


def attack_label(name: str) -> str:
    """Displayed name of an attack ("SimA", "PIA", ...); unknown names as they are."""
    return ATTACK_LABELS.get(name, name)
