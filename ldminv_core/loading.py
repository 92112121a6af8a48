"""Moved to ldminv_core.models (sources, configs, loading) and ldminv_core.data (image_folders,
captions, safe_files); this module only re-exports them for one release."""
from __future__ import annotations

import os  # noqa: F401 - callers patch ``loading.os.open`` (the os module itself)

from .data.captions import METADATA_FILES
from .data.image_folders import ImageSet, LoadReport, check_image_folder, load_image_folder, pixel_hash
from .data.safe_files import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, display_name
from .models.loading import LoadedModel, idle_cpu_threads, load_model, resolve_device
from .models.sources import check_model

__all__ = [
    "LoadedModel",
    "idle_cpu_threads",
    "LoadReport",
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "METADATA_FILES",
    "load_model",
    "check_model",
    "load_image_folder",
    "check_image_folder",
    "resolve_device",
    "MAX_IMAGE_PIXELS",
    "display_name",
    "pixel_hash",
]
