"""Moved to ldminv_core.data.blind_features (the model-free features) and
ldminv_core.models.blind_encoder (the optional image model); this module only re-exports them for
one release."""
from __future__ import annotations

from .data.blind_features import (
    BLIND_FILE,
    BLIND_GROUPS,
    BlindFeatures,
    blind_features,
    jpeg_quality,
    read_blind_features,
    run_blind_features,
    store_blind_features,
)
from .models.blind_encoder import (
    CLIP_MEAN_STD,
    ENCODER_BATCH,
    IMAGENET_MEAN_STD,
    ImageEncoder,
    encoder_embeddings,
    load_image_encoder,
    resolve_image_encoder,
)

__all__ = ["BLIND_GROUPS", "BLIND_FILE", "BlindFeatures", "blind_features", "jpeg_quality",
           "store_blind_features", "read_blind_features", "run_blind_features",
           "ImageEncoder", "resolve_image_encoder", "load_image_encoder", "encoder_embeddings",
           "CLIP_MEAN_STD", "IMAGENET_MEAN_STD", "ENCODER_BATCH"]
