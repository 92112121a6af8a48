"""The fixed choices of the analysis options, kept free of heavy imports so that the command line
can build its parser (and answer ``--help``) without importing torch."""
from __future__ import annotations

__all__ = [
    "INFLUENCE_METHODS", "PROBES_AUTO", "HUTCHINSON_RANK_PROBES", "RESIDUAL_DTYPES", "LATENT_KINDS", "LOG_VOLUME_KINDS", "PRESETS", "ATTACK_LABELS",
    "ATTACK_NAMES",
    "SCORE_ONLY_ATTACKS",
    "DEFAULT_N_BOOT",
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "attack_label",
]

#: The evaluation protocols (METHOD.md section 4), default first: the command line's ``--protocol``,
#: the sidebar and :mod:`ldminv_core.evaluation.protocols` read them from here.
PROTOCOLS: tuple[str, ...] = ("standard", "paper", "honest")
DEFAULT_PROTOCOL = "standard"
#: Bootstrap replicates of every interval by default, on every surface (``report --n-boot``, the
#: dashboard, the HTML export; ``ldminv_core.evaluation`` re-exports it). 1000: a 95% percentile
#: interval then rests on the 25 most extreme replicates at each end (at 200 on 5, and its bounds
#: move visibly with the seed). Cost at demo scale (600 samples, 30 timesteps, d = 256): one
#: attack's findings 0.3-0.65 s (0.1-0.25 s at 200), a new drop on Masks & ROC 0.2-0.4 s.
DEFAULT_N_BOOT = 1000
#: Per-coordinate influence paths of ``analyze --influence``.
INFLUENCE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson")
#: ``analyze --probes auto`` (the default): the geometry plan chooses the Hutchinson probe count,
#: :data:`HUTCHINSON_RANK_PROBES`; a number is used as given.
PROBES_AUTO = "auto"
#: Hutchinson probes that keep the median per-sample Spearman rank correlation between estimated
#: and exact influence >= 0.98 on the benchmark decoders (``ldminv_core.geometry`` re-exports it).
HUTCHINSON_RANK_PROBES = 256
#: Stored dtypes of ``residuals/<attack>.npy`` (``analyze --residual-dtype``).
RESIDUAL_DTYPES: tuple[str, ...] = ("float32", "float16")
#: The analysed latent (``analyze --latent``): the encoder mean or a posterior sample seeded per
#: sample id (:mod:`ldminv_core.models.latents`).
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
ATTACK_LABELS: dict[str, str] = {"sima": "SimA", "pia": "PIA", "loss": "Loss", "secmi": "SecMI", "pfami": "PFAMI",
                                 "clid": "CLiD"}
#: The attacks' machine names, in the order the attacks are offered (``ldminv_core.attacks.ATTACKS``
#: holds the same names, checked by a test); the names a run.json may hold.
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACK_LABELS)
#: The attacks that store one score per sample ("scores" in ``ldminv_core.attacks.REGISTRY``, which
#: checks it); every other attack stores per-coordinate terms and is maskable.
SCORE_ONLY_ATTACKS: tuple[str, ...] = ("pfami",)


def attack_label(name: str) -> str:
    """Displayed name of an attack ("SimA", "PIA", ...); unknown names as they are."""
    return ATTACK_LABELS.get(name, name)
