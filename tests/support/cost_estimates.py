"""A fixed cost estimate of an analysis (five stages, geometry 96 % of the time), for the tests
of what the model page and the estimate's text say before an analysis starts."""
from __future__ import annotations

from ldminv_core.pipeline.cost import CostEstimate, StageCost


def fake_estimate() -> CostEstimate:
    """The estimate of 100 + 100 images, latents 4x16x16, Hutchinson influence and matrix-free
    log-volume on the CPU: load 5 s, encode 4 s, SimA 10 s, PIA 11 s, geometry 648 s."""
    est = CostEstimate(n_members=100, n_heldout=100, latent_shape=(4, 16, 16), influence_method="hutchinson",
                       log_volume_method="matrix_free", device="cpu", timed_batch=50)
    est.stages = [StageCost("load", 200, seconds=5.0), StageCost("encode", 200, encoder_calls=200, seconds=4.0),
                  StageCost("sima", 200, unet_calls=2000, seconds=10.0),
                  StageCost("pia", 200, unet_calls=2200, seconds=11.0),
                  StageCost("geometry", 200, decoder_products=161_200, seconds=648.0)]
    return est
