"""Moved to ldminv_core.pipeline (config, plan, output_folder, inputs, cost, stages, run, ...)
and ldminv_core.data.duplicates; this module only re-exports it for one release."""
from __future__ import annotations

from .choices import (  # noqa: F401
    INFLUENCE_METHODS,
    LATENT_KINDS,
    LOG_VOLUME_KINDS,
    PRESETS,
    PROBES_AUTO,
    RESIDUAL_DTYPES,
)
from .data.duplicates import find_duplicates  # noqa: F401
from .pipeline.batches import WITHIN_BATCH_REPORT_S, AnalysisCancelled, ProgressFn, _Stage, _within_batch  # noqa: F401
from .pipeline.config import (  # noqa: F401
    AnalyzeConfig,
    _as_path_text,
    _as_probes,
    _model_ref,
    _normalize_attacks,
    _normalize_lora,
    _normalize_timesteps,
    preset_config,
)
from .pipeline.cost import (  # noqa: F401
    _MAX_TIMED_BATCH,
    _MAX_TIMED_GEOMETRY_S,
    CostEstimate,
    StageCost,
    _fmt_bytes,
    _timed,
    _unet_calls_per_sample,
    estimate_cost,
    format_duration,
    format_per_image,
    format_percent,
)
from .pipeline.follower import _run_follower  # noqa: F401
from .pipeline.geometry_paths import (  # noqa: F401
    _geometry_methods,
    _log_volume_kwargs,
    _make_geometry_plan,
    _plan_fits,
    _probes_record,
    _probes_to_run,
    _requested_probes,
    describe_geometry_plan,
)
from .pipeline.inputs import (  # noqa: F401
    _check_duplicates,
    _check_lora_hashes,
    _check_model_lora,
    _check_timesteps_for_model,
    _duplicate_message,
    _load_images,
    _load_plan_model,
    _rank_device,
    _samples_table,
    load_config_model,
)
from .pipeline.output_folder import (  # noqa: F401
    _OUT_EXPECTED,
    PSEUDO_FILESYSTEMS,
    _check_out,
    _filesystem_type,
    _probe_write,
    _unescape_mount_field,
)
from .pipeline.plan import (  # noqa: F401
    _complete_run_matches,
    _plan,
    _Plan,
    _preflight,
    _read_stored_run,
    _settings_against,
    _settings_diff,
    check_config,
    config_settings,
)
from .pipeline.record import _attack_spec, _versions  # noqa: F401
from .pipeline.rows import (  # noqa: F401
    _WORK_LOG_VOLUME,
    _attack_rows,
    _check_finite,
    _geometry_rows,
    _open_existing,
    _stage_arrays,
)
from .pipeline.run import _run_main, run_analysis  # noqa: F401
from .pipeline.stages import STAGES, blind_stage  # noqa: F401

__all__ = [
    "AnalyzeConfig",
    "AnalysisCancelled",
    "CostEstimate",
    "StageCost",
    "estimate_cost",
    "run_analysis",
    "check_config",
    "preset_config",
    "load_config_model",
    "describe_geometry_plan",
    "find_duplicates",
    "config_settings",
    "STAGES",
    "format_duration",
    "format_percent",
    "format_per_image",
    "INFLUENCE_METHODS",
    "RESIDUAL_DTYPES",
]
