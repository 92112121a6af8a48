"""Shared pieces of the benchmarks: threads, timing, machine info, models, tables.

Models: the bundled demo (``assets/demo/model``) when its folder is complete, else a
randomly initialised AutoencoderKL / UNet2DModel of the same kind (1-channel 32x32 images,
4x8x8 latents), and a randomly initialised AutoencoderKL with Stable Diffusion's block
layout at any latent size. Every result records which model it used.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Threads torch may use: the benchmark machine has 2 cores (see README.md).
TORCH_THREADS = 2

#: Files that must exist before the demo folder is used (the trainer writes them last).
_DEMO_FILES = (
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
)

#: Random stand-in for the demo VAE when the trained one is not there yet.
FALLBACK_DEMO_VAE = dict(
    in_channels=1,
    out_channels=1,
    latent_channels=4,
    block_out_channels=(4, 8, 16),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=32,
    scaling_factor=1.0,
)

#: Random stand-in for the demo UNet (8x8x4 latents, attention at the two lower levels).
FALLBACK_DEMO_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=8,
)

#: Stable Diffusion's AutoencoderKL layout, channels scaled down 32x for a 2-core CPU.
#: (SD v1: block_out_channels (128, 256, 512, 512), layers_per_block 2, 32 groups.)
SD_LAYOUT_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(4, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=4,
    scaling_factor=0.18215,
    mid_block_add_attention=True,
)


def set_threads(n: int = TORCH_THREADS) -> None:
    """Pin torch's intra-op thread pool to ``n`` threads (and inter-op to 1)."""
    torch.set_num_threads(int(n))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# ----------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time (s, time.perf_counter) of one call of ``fn`` and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn: Callable[[int], Any], *, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of ``fn(i)`` over ``repeats`` calls after ``warmup`` untimed calls.

    ``fn`` receives the call index so that repeated calls can vary their input.
    Returns {"median_s", "min_s", "max_s", "repeats"}.
    """
    for i in range(warmup):
        fn(-1 - i)
    times = [time_call(lambda: fn(i))[0] for i in range(repeats)]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
    }


def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of log(y) against log(x) by least squares (y ~ x^slope); NaN with < 2 points."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    ok = (xs > 0) & (ys > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, torch threads, load, memory and package versions."""
    import diffusers
    import pandas
    import scipy
    import sklearn

    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil ships with the environment
        mem_gb = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "memory_gb": mem_gb,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "pandas": pandas.__version__,
        },
        "niceness": os.nice(0),
    }


def now_iso() -> str:
    """Local date and time, ISO 8601 with offset."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- models


def demo_dirs() -> tuple[Path, Path]:
    """(model folder, member image folder) of the bundled demo."""
    try:
        from ldminv_core import demo

        return Path(demo.DEMO_MODEL_DIR), Path(demo.DEMO_MEMBERS_DIR)
    except (ImportError, AttributeError):
        return REPO / "assets" / "demo" / "model", REPO / "assets" / "demo" / "members"


def demo_model_ready() -> bool:
    """True when every file of the trained demo model is in place."""
    model_dir, _ = demo_dirs()
    return all((model_dir / f).is_file() for f in _DEMO_FILES)


def wait_for_demo(timeout_s: float, *, poll_s: float = 30.0) -> bool:
    """Poll for the trained demo model for up to ``timeout_s`` seconds; True when it is there."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        if demo_model_ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())) or 0.01)


@dataclass
class DemoModel:
    """The demo's VAE, UNet and scheduler, and where they came from.

    ``decode`` maps scaled latents (B, 4, 8, 8) to images (B, 1, 32, 32) (what geometry
    takes); ``source`` is "assets/demo/model" or "random (demo-sized)".
    """

    vae: Any
    unet: Any
    scheduler: Any
    decode: Callable[[torch.Tensor], torch.Tensor]
    scaling_factor: float
    source: str
    vae_config: dict = field(default_factory=dict)
    unet_config: dict = field(default_factory=dict)
    note: str = ""
    members_dir: Path | None = None


def _config_summary(module: Any) -> dict:
    keys = ("block_out_channels", "layers_per_block", "norm_num_groups", "down_block_types",
            "latent_channels", "in_channels", "sample_size", "scaling_factor", "attention_head_dim")
    cfg = dict(module.config)
    out = {k: (list(cfg[k]) if isinstance(cfg[k], (list, tuple)) else cfg[k]) for k in keys if k in cfg}
    out["parameters"] = int(sum(p.numel() for p in module.parameters()))
    return out


def load_demo_model(*, seed: int = 0) -> DemoModel:
    """The trained demo model when its folder is complete, else a random one of the same kind."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

    model_dir, members_dir = demo_dirs()
    note = ""
    if demo_model_ready():
        try:
            from ldminv_core.models.loading import load_model

            lm = load_model(model_dir, device="cpu", dtype=torch.float32)
            return DemoModel(
                vae=lm.vae, unet=lm.unet, scheduler=lm.scheduler, decode=lm.decoder_fn(),
                scaling_factor=float(lm.scaling_factor), source=str(model_dir.relative_to(REPO)),
                vae_config=_config_summary(lm.vae), unet_config=_config_summary(lm.unet),
                members_dir=members_dir if members_dir.is_dir() else None,
            )
        except Exception as exc:  # noqa: BLE001 - a half-written folder falls back, with the reason
            note = f"demo folder present but not loadable ({type(exc).__name__}: {exc}); "
    torch.manual_seed(seed)
    vae = AutoencoderKL(**FALLBACK_DEMO_VAE).eval().requires_grad_(False)
    torch.manual_seed(seed + 1)
    unet = UNet2DModel(**FALLBACK_DEMO_UNET).eval().requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    sf = float(vae.config.scaling_factor)
    from ldminv_core.geometry.tangents import VaeDecoder

    return DemoModel(
        vae=vae, unet=unet, scheduler=scheduler, decode=VaeDecoder(vae, scaling_factor=sf),
        scaling_factor=sf, source="random (demo-sized)",
        vae_config=_config_summary(vae), unet_config=_config_summary(unet),
        note=(note or "trained demo model not found; ") + "randomly initialised models of the same kind",
    )


def demo_latents(model: DemoModel, n: int, *, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(n, 4, 8, 8) float32 latents: encoded member images of the demo, or N(0, I) draws.

    Returns the latents and a description of where they came from.
    """
    if model.members_dir is not None:
        try:
            from ldminv_core.data.image_folders import load_image_folder

            images = load_image_folder(model.members_dir, channels=1, resolution=32, limit=n).images
            if images.shape[0] >= n:
                with torch.no_grad():
                    mean = model.vae.encode(images[:n]).latent_dist.mean
                return (mean * model.scaling_factor).float().contiguous(), f"first {n} demo member images"
        except Exception:  # noqa: BLE001 - fall back to random latents below
            pass
    gen = torch.Generator().manual_seed(seed)
    shape = (int(model.vae.config.latent_channels), 8, 8)
    return torch.randn(n, *shape, generator=gen), f"{n} latents drawn from N(0, I), seed {seed}"


def sd_layout_vae(*, seed: int = 0, **overrides: Any):
    """Randomly initialised AutoencoderKL with Stable Diffusion's block layout (SD_LAYOUT_VAE)."""
    from diffusers import AutoencoderKL

    cfg = {**SD_LAYOUT_VAE, **overrides}
    torch.manual_seed(seed)
    return AutoencoderKL(**cfg).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- tables


def fmt(value: Any) -> str:
    """Human formatting of a number (None/NaN -> "n/a")."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(lines)
