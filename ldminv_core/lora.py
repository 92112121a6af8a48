"""Moved to ldminv_core.models.lora_files, lora_plan and lora_apply; this module only re-exports
them for one release."""
from __future__ import annotations

from .models.lora_apply import apply_lora
from .models.lora_files import LORA_WEIGHT_NAME, PEFT_REQUIREMENT, LoraAdapter, check_lora, parse_lora_args

__all__ = ["LoraAdapter", "apply_lora", "check_lora", "parse_lora_args", "LORA_WEIGHT_NAME", "PEFT_REQUIREMENT"]
