"""CLiD: the conditional likelihood discrepancy of a text-to-image model, per latent coordinate.

Zhai et al., "Membership Inference on Text-to-image Diffusion Models via Conditional Likelihood
Discrepancy" (NeurIPS 2024), reference code ``zhaisf/CLiD``. Members were fitted to their own
captions, so their denoising error rises more than a held-out image's when the caption is
degraded. Text-conditioned models only.

What the reference does (``mia_CLiD_clip.py``; its threshold / classifier variants in
``cal_clid_th.py`` / ``cal_clid_xgb.py``):

- Timesteps: a window of 3 timesteps, spacing 10, around the middle of the 1000-step
  schedule: start = 1000 // 2 - (10 * 3) // 2, giving 485, 495, 505 (:data:`CLID_WINDOW`).
- Noise: one Gaussian draw per timestep and image (3 per image), shared by the image's own
  caption and every degraded caption; z_t = a(t) z0 + b(t) e with the family's forward
  process (``pred._a``, ``pred._b``: the reference's scheduler.add_noise, sqrt(abar_t) and
  sqrt(1 - abar_t), for the DDPM family; 1 - t/T and t/T for rectified flow, METHOD.md section 5).
- Caption degradations (4): the caption's first, middle and last third by characters
  (``c[:len//3]``, ``c[len//3:2*len//3]``, ``c[2*len//3:]``, cutting through words as the
  reference does) and the empty caption (:func:`degraded_captions`), each encoded exactly
  like the own caption (CLIP tokenizer padded to max length, text encoder's last hidden
  state, no classifier-free guidance).
- Errors: L_own = mean over the 3 timesteps and all coordinates of (e - eps_hat(z_t, t, c))^2;
  L_k the same under degradation k; the features are [L_own, L_1 - L_own, ..., L_4 - L_own].
- Combination: the per-timestep errors are averaged over the window before anything else
  (one number per caption). The "threshold" variant scores -mean_k (L_k - L_own) (lower =
  member), optionally mixed with L_own as (1 - alpha) L_own + alpha * (-gap) after a robust
  scaling, alpha in {0, 0.1, ..., 1} picked on a shadow model; the "classifier" variant fits
  XGBoost on the 5 features of a shadow model. Both are protocol choices (how a threshold is
  calibrated), not the statistic (METHOD.md section 7).
- UNet calls per image: 3 (own caption) + 4 x 3 (degradations) = 15 (:data:`CLID_UNET_CALLS`).

What ldminv stores: the alpha = 1 statistic (the discrepancy alone) written per coordinate,

    term_i = mean over t in the window of ( |e_t - eps_hat(z_t, t, c)|_i^p
                                            - mean over k of |e_t - eps_hat(z_t, t, c_k)|_i^p ),

p = 2, as ONE stored step (T = 1) recorded at the window's centre t = 495 (run.json keeps the
window and the degradations next to it), so that sum_i term_i = -d * (mean_k L_k - L_own):
statistic = minus d times the reference's gap, membership score = -statistic (higher =
member), and the dimension masks, drop curves, protocols and findings apply unchanged.

Deliberate differences:

- The paper's headline numbers come from the "importance" variant (``mia_CLiD_impt.py``:
  the words of highest importance replaced by ``<|endoftext|>`` at cut rates 0.3 / 0.5 / 0.7,
  plus the empty caption, window 440, 450, 460), whose per-word importances are read from
  precomputed files (``data/impt_metadata/*.jsonl``) that the release does not include or
  compute; ldminv implements the self-contained variant above (same structure and cost).
- The noise is seeded per sample id (stream :data:`CLID_STREAM`) instead of one unseeded
  global pool, so batching and resuming give the same numbers; the latent is the run's
  (the encoder mean by default; the reference samples the posterior, ``--latent sample``).
- No shadow model: the alpha mixing and the XGBoost fit are not offered; the protocols
  choose thresholds (standard / paper / honest).
- An image without a caption is refused (its degradations would all equal the empty own
  caption and its discrepancy would be 0 by construction, not evidence).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import LdminvError, ModelKindError
from ..models.noise_prediction import NoisePrediction
from .common import power

__all__ = ["CLID_WINDOW", "CLID_STORED_TIMESTEP", "CLID_STREAM", "CLID_DEGRADATIONS", "CLID_UNET_CALLS",
           "degraded_captions", "clid_batch", "check_clid_model", "refuse_clid_model", "check_clid_captions",
           "clid_unet_calls"]

CLID_WINDOW: tuple[int, ...] = (485, 495, 505)
"""The reference's timesteps, averaged into CLiD's one stored step."""

CLID_STORED_TIMESTEP: int = CLID_WINDOW[len(CLID_WINDOW) // 2]
"""The timestep CLiD's one stored step is recorded at: the window's centre (495)."""

#: Seed stream of CLiD's noise (one draw per window timestep and sample).
CLID_STREAM = 3

CLID_DEGRADATIONS: tuple[str, ...] = ("first third", "middle third", "last third", "empty")
"""The caption degradations, in the order of :func:`degraded_captions`."""


def clid_unet_calls(window: Sequence[int] = CLID_WINDOW) -> int:
    """UNet forwards per image: (1 own caption + the degradations) x the window's timesteps."""
    return len(window) * (1 + len(CLID_DEGRADATIONS))


CLID_UNET_CALLS: int = clid_unet_calls()
"""UNet forwards per image with the reference window: 3 x (1 + 4) = 15."""


def degraded_captions(caption: str) -> tuple[str, str, str, str]:
    """The four degraded captions of ``caption``: its first, middle and last third by
    characters (cuts at len // 3 and 2 * len // 3, through words) and the empty caption."""
    n = len(caption)
    a, b = n // 3, (2 * n) // 3
    return caption[:a], caption[a:b], caption[b:], ""


def refuse_clid_model(kind: str, *, detail: str) -> None:
    """Raise the ModelKindError of CLiD on a model of ``kind`` ("unconditional", "class-conditional"),
    ``detail`` saying how that is known (e.g. "UNet2DModel")."""
    article = "an" if kind[:1] in "aeiou" else "a"
    raise ModelKindError(
        "attack 'clid' (CLiD): expected a text-conditioned model (SD 1.x/2.x, SDXL, SD3, Flux, or a custom "
        f"adapter with encode_prompts), got {article} {kind} model ({detail}); CLiD compares the denoising error under an "
        "image's own caption with that under degraded captions, so it needs a model that reads captions "
        "(run the other attacks without clid)"
    )


def check_clid_model(pred: NoisePrediction) -> None:
    """ModelKindError unless the model is text-conditioned (CLiD degrades captions)."""
    net = next((getattr(pred, a) for a in ("unet", "transformer", "model") if getattr(pred, a, None) is not None),
               None)
    detail = type(net).__name__ if net is not None else type(pred).__name__
    if getattr(pred, "conditions_on", "caption") == "label":
        refuse_clid_model("class-conditional", detail=detail)
    if not pred.is_conditional:
        refuse_clid_model("unconditional", detail=detail)


def check_clid_captions(captions: Sequence[Any] | None, n: int) -> list[str]:
    """The n captions as strings; LdminvError naming the first sample without one (None or blank):
    CLiD's discrepancy is measured against each image's own caption."""
    if captions is None:
        raise LdminvError(
            f"captions: attack 'clid' (CLiD) needs each image's own caption, got None for all {n} samples "
            "(image folders: a metadata.jsonl / metadata.csv with columns file_name and text)"
        )
    caps = list(captions)
    missing = [i for i, c in enumerate(caps) if not isinstance(c, str) or not c.strip()]
    if missing:
        shown = ", ".join(f"captions[{i}] = {caps[i]!r}" for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise LdminvError(
            f"captions: attack 'clid' (CLiD) needs a non-empty caption for every sample, got {shown}{more}"
        )
    return caps


def clid_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor, *, timesteps: list[int], p: float,
               noise: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """CLiD terms (B, 1, C, h, w) of one batch: the mean over the window ``timesteps`` (T') of
    |e_t - eps_hat(z_t, t, own)|^p - mean_k |e_t - eps_hat(z_t, t, degraded_k)|^p, with
    z0 latents z (B, C, h, w), own-caption conditioning ``cond`` (B, L, D), the batch's seeded
    noise (B, T', C, h, w) and its captions (B strings). 5 x T' UNet forwards of B rows."""
    parts = list(zip(*(degraded_captions(c) for c in captions)))  # K tuples of B captions
    degraded = [pred.encode_prompts(list(texts)) for texts in parts]
    acc = torch.zeros_like(z)
    for j, t in enumerate(timesteps):
        e = noise[:, j]
        z_t = torch.add(z * pred._a[t], e, alpha=pred._b[t])
        gap = torch.zeros_like(z)
        for cond_k in degraded:
            gap += power(torch.sub(e, pred._eps(z_t, t, cond_k)), p)
        acc += power(torch.sub(e, pred._eps(z_t, t, cond)), p) - gap / len(degraded)
    return (acc / len(timesteps)).unsqueeze(1)
