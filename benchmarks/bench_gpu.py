"""GPU cost of the real Stable Diffusion-scale models: decoder products, geometry, attacks, peak memory.

For each family (SD 1.x, SDXL, Flux) the VAE and the denoiser are built with RANDOM weights
from the real configurations (the config.json values of ``CompVis/stable-diffusion-v1-4``,
``stabilityai/stable-diffusion-xl-base-1.0`` and ``black-forest-labs/FLUX.1-dev``, written
below; nothing downloads). Cost does not depend on the weights' values, only on the shapes.
The text encoders are random stand-ins of the real widths with few layers (CLIP-L 768,
OpenCLIP-bigG 1280 with a 1280 projection, T5-XXL 4096) over a character-level tokenizer
padded to the real token counts (77; Flux's T5: 512): the conditioning tensors have the real
shapes, the encoders' own cost (tiny next to the denoiser's) is not the real one.

Rows, each timed on the device (``torch.cuda.synchronize`` around every timed call) with its
peak memory (``torch.cuda.max_memory_allocated`` since the row began, which includes what was
resident at its start: all of the family's weights and the latents, given as ``resident GiB``):

- ``jvp`` / ``vjp``: one decoder product J v / J^T u at one latent, by the products the
  geometry takes (``geometry.products._Products``: the layer-by-layer engine of
  ``geometry.tangents`` when it accepts the decoder, torch.func otherwise), one direction;
- ``geometry``: per sample, ``decoder_geometry(decode, z, plan=plan_geometry(...))`` with the
  settings ``analyze`` uses by default (k 50, influence "auto", top-k log-volume, probes
  "auto"), the plan made on the first latent as ``pipeline/geometry_paths.py`` makes it
  (planning time reported apart); d = 16384 (SD / SDXL 4x64x64 = 512 px images; Flux
  16x32x32 = 256 px images);
- ``attack:<name>``: per image, ``attacks.attack_terms`` (sima, pia, loss, secmi, clid) and
  ``attacks.pfami_scores`` with their default timesteps, on the family's NoisePrediction built
  by its ``from_components``, all images in one batch.

Run on a GPU machine::

    python benchmarks/bench_gpu.py                      # fp32, all families -> benchmarks/gpu.json
    python benchmarks/bench_gpu.py --dtype bf16 --families sd1,sdxl

Without CUDA it prints "no CUDA device: skipped" and exits 0. ``--dry-run --device cpu
--tiny`` runs the same code on tiny configurations on the CPU (checked by
``benchmarks/test_bench_gpu.py``) and writes no JSON unless ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

from ldminv_core import attacks, geometry  # noqa: E402
from ldminv_core.geometry.products import _Products  # noqa: E402
from ldminv_core.geometry.tangents import VaeDecoder  # noqa: E402

OUT_JSON = common.REPO / "benchmarks" / "gpu.json"
ATTACKS = ("sima", "pia", "loss", "secmi", "clid", "pfami")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CAPTIONS = ("a red cat on a tree", "the small blue dog", "a cat and a dog", "red tree, blue sky")
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# ----------------------------------------------------------------------------- real configurations

_SD_VAE = dict(  # CompVis/stable-diffusion-v1-4 vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
SD1_UNET = dict(  # CompVis/stable-diffusion-v1-4 unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False,
)
SDXL_VAE = dict(_SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    addition_embed_type_num_heads=64, projection_class_embeddings_input_dim=2816, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0,
)
FLUX_VAE = dict(  # black-forest-labs/FLUX.1-dev vae/config.json
    _SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
)
FLUX_TRANSFORMER = dict(  # black-forest-labs/FLUX.1-dev transformer/config.json
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)

# ----------------------------------------------------------------------------- tiny stand-ins (CPU check)

_TINY_VAE = dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32)
_TINY_UNET = dict(layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=4,
                  sample_size=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16)
_TINY_SDXL_UNET = dict(
    _TINY_UNET, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), transformer_layers_per_block=1,
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=40, addition_time_embed_dim=4,
    projection_class_embeddings_input_dim=6 * 4 + 24, use_linear_projection=False, addition_embed_type_num_heads=2,
)
_TINY_FLUX = dict(num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
                  joint_attention_dim=24, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))


@dataclass(frozen=True)
class FamilySpec:
    """One family's VAE / denoiser configurations, text encoder widths and benchmark latent shape.

    ``text``: {"clip": width, "clip_2": (width, projection) or None, "t5": width or None,
    "tokens": CLIP positions, "t5_tokens": T5 sequence length}.
    """

    name: str
    vae: dict
    denoiser: dict
    text: dict
    latent: tuple[int, int, int]
    tiny_vae: dict = field(default_factory=dict)
    tiny_denoiser: dict = field(default_factory=dict)
    tiny_text: dict = field(default_factory=dict)
    tiny_latent: tuple[int, int, int] = (4, 4, 4)


FAMILIES = {
    "sd1": FamilySpec("sd1", _SD_VAE, SD1_UNET, {"clip": 768, "tokens": 77}, (4, 64, 64),
                      _TINY_VAE, _TINY_UNET, {"clip": 16, "tokens": 8}),
    "sdxl": FamilySpec("sdxl", SDXL_VAE, SDXL_UNET, {"clip": 768, "clip_2": (1280, 1280), "tokens": 77}, (4, 64, 64),
                       _TINY_VAE, _TINY_SDXL_UNET, {"clip": 16, "clip_2": (24, 24), "tokens": 8}),
    "flux": FamilySpec("flux", FLUX_VAE, FLUX_TRANSFORMER, {"clip": 768, "t5": 4096, "tokens": 77, "t5_tokens": 512},
                       (16, 32, 32), _TINY_VAE, _TINY_FLUX, {"clip": 16, "t5": 24, "tokens": 8, "t5_tokens": 8},
                       (16, 4, 4)),
}


# ----------------------------------------------------------------------------- building the models

def _clip(vocab: int, width: int, tokens: int, projection: int | None = None) -> torch.nn.Module:
    """A random 2-layer CLIP text encoder of the given width (with a projection when asked)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=width, num_hidden_layers=2,
                         num_attention_heads=max(1, width // 64), max_position_embeddings=tokens,
                         projection_dim=projection or width, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5(vocab: int, width: int) -> torch.nn.Module:
    """A random 1-layer T5 encoder of the given width."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab, d_model=width, d_kv=64 if width >= 64 else 8, d_ff=width, num_layers=1,
                   num_heads=max(2, width // 64), relative_attention_num_buckets=8, pad_token_id=1, eos_token_id=1)
    return T5EncoderModel(cfg).eval()


def _tokenizer(folder: Path, length: int):
    from transformers import CLIPTokenizer

    from tests.tiny_models import write_tiny_tokenizer

    tok = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(folder / "tok")))
    tok.model_max_length = length
    return tok


def _text_parts(text: dict, folder: Path) -> dict[str, Any]:
    """The stand-in text encoders and tokenizers, keyed as the pipelines name them."""
    tok = _tokenizer(folder, text["tokens"])
    vocab = len(tok)
    parts: dict[str, Any] = {"tokenizer": tok, "text_encoder": _clip(vocab, text["clip"], text["tokens"])}
    if text.get("clip_2"):
        width, proj = text["clip_2"]
        parts.update(tokenizer_2=_tokenizer(folder, text["tokens"]),
                     text_encoder_2=_clip(vocab, width, text["tokens"], projection=proj))
    if text.get("t5"):
        parts.update(tokenizer_2=_tokenizer(folder, text["t5_tokens"]), text_encoder_2=_t5(vocab, text["t5"]))
    return parts


@dataclass
class Built:
    """A family's models on the device: the decoder (VaeDecoder), the NoisePrediction, the latent shape."""

    decode: VaeDecoder
    predictor: Any
    latent: tuple[int, int, int]
    parameters: dict[str, int]


def build_family(spec: FamilySpec, *, tiny: bool, device: torch.device, dtype: torch.dtype, folder: Path) -> Built:
    """Random-weight VAE, denoiser and text stand-ins of ``spec`` on ``device`` in ``dtype``.

    Modules are created directly on the device (``with torch.device(...)``) so that Flux's
    12B-parameter transformer is never initialised on the host.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, FlowMatchEulerDiscreteScheduler

    vae_cfg = dict(spec.vae, **spec.tiny_vae) if tiny else spec.vae
    den_cfg = dict(spec.denoiser, **spec.tiny_denoiser) if tiny else spec.denoiser
    text = spec.tiny_text if tiny else spec.text
    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderKL(**vae_cfg).to(dtype).eval().requires_grad_(False)
        parts = _text_parts(text, folder)
        den = _denoiser(spec.name, den_cfg)
    if spec.name == "flux":
        from ldminv_core.models.flux import FluxNoisePredictor

        pred = FluxNoisePredictor.from_components(den, FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), text=parts,
                                                  device=device, dtype=dtype)
    elif spec.name == "sdxl":
        from ldminv_core.models.sdxl import SDXLNoisePredictor

        pred = SDXLNoisePredictor.from_components(den, DDPMScheduler(**SD_BETAS), text=parts, device=device,
                                                  dtype=dtype,
                                                  vae_scale_factor=2 ** (len(vae_cfg["block_out_channels"]) - 1))
    else:
        from ldminv_core.models.noise_prediction import NoisePredictor

        pred = NoisePredictor.from_components(den, DDPMScheduler(**SD_BETAS), text_encoder=parts["text_encoder"],
                                              tokenizer=parts["tokenizer"], device=device, dtype=dtype)
    decode = VaeDecoder(vae, scaling_factor=vae_cfg["scaling_factor"], shift_factor=vae_cfg.get("shift_factor"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return Built(decode, pred, spec.tiny_latent if tiny else spec.latent,
                 {"vae": count(vae), "denoiser": count(den)})


def _denoiser(name: str, cfg: dict) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel, UNet2DConditionModel

    cls = FluxTransformer2DModel if name == "flux" else UNet2DConditionModel
    return cls(**cfg).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_RESIDENT: dict[str, float | None] = {"gib": None}


def _reset_peak(device: torch.device) -> None:
    """Start a row: reset the CUDA peak and note what is allocated already (weights, latents)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        _RESIDENT["gib"] = torch.cuda.memory_allocated(device) / 2**30


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _memory(device: torch.device) -> dict[str, float | None]:
    """The row's memory: peak allocated since the row began, and what was resident at its start."""
    cuda = device.type == "cuda"
    return {"peak_gib": _peak_gib(device), "resident_gib": _RESIDENT["gib"] if cuda else None}


def timed(fn: Callable[[], Any], device: torch.device, *, repeats: int = 1, warmup: int = 0) -> tuple[float, Any]:
    """(median seconds of ``repeats`` calls after ``warmup`` untimed ones, last result), synchronised."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def latents(shape: tuple[int, ...], n: int, *, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """n standard-normal latents (n, *shape): the scale of the encoder's scaled latents."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen).to(device, dtype)


def product_rows(b: Built, z1: torch.Tensor, device: torch.device, repeats: int) -> list[dict]:
    """One J v and one J^T u at z1 (1, C, h, w) by the geometry's own products (one direction)."""
    image_shape = tuple(b.decode(z1).shape[1:])
    prod = _Products(b.decode, z1, 1, image_shape)
    rows = torch.zeros(1, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(1, *z1.shape[1:], generator=gen).to(z1)
    u = torch.randn(1, *image_shape, generator=gen).to(z1)
    out = []
    for kind, fn in (("jvp", lambda: prod.jvp(rows, v)), ("vjp", lambda: prod.vjp(rows, u))):
        _reset_peak(device)
        s, _ = timed(fn, device, repeats=repeats, warmup=1)
        out.append({"step": kind, "seconds": s, "per": "product", "engine": prod.engine, **_memory(device)})
    return out


def geometry_row(b: Built, z: torch.Tensor, device: torch.device) -> tuple[dict, Any, Any]:
    """The auto geometry of z (N, C, h, w) as ``analyze`` plans and runs it: (row, plan, Geometry)."""
    _reset_peak(device)
    plan_s, gp = timed(lambda: geometry.plan_geometry(b.decode, z[:1], k=50, influence="auto", log_volume="topk",
                                                      probes=None, measure=True), device)
    s, geo = timed(lambda: geometry.decoder_geometry(b.decode, z, plan=gp, seed=0), device)
    row = {"step": "geometry", "seconds": s / z.shape[0], "per": "sample", "engine": geo.engine,
           **_memory(device), "plan_seconds": plan_s, "paths": gp.describe(),
           "influence": gp.influence_method, "log_volume_method": gp.log_volume_method, "products": dict(gp.products),
           "samples": int(z.shape[0])}
    return row, gp, geo


def attack_rows(b: Built, z: torch.Tensor, names: list[str], device: torch.device,
                timesteps: list[int] | None = None) -> list[dict]:
    """Per-image seconds of each attack on z (N, C, h, w), all N images in one batch; each attack's
    default timesteps, or ``timesteps`` for every attack (PFAMI's and CLiD's window included)."""
    n = z.shape[0]
    caps = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    ts = {} if timesteps is None else {"timesteps": list(timesteps)}
    out = []
    for name in names:
        if name == "pfami":
            fn = lambda: attacks.pfami_scores(b.predictor, z, captions=caps, batch_size=n, **ts)  # noqa: E731
        else:
            fn = lambda name=name: attacks.attack_terms(name, b.predictor, z, captions=caps,  # noqa: E731
                                                        batch_size=n, **ts)
        _reset_peak(device)
        try:
            s, res = timed(fn, device)
            row = {"step": f"attack:{name}", "seconds": s / n, "per": "image", **_memory(device),
                   "images": n, "shape": list(res.shape)}
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: recorded, the other rows go on
            row = {"step": f"attack:{name}", "seconds": None, "per": "image", "error": f"{type(exc).__name__}: {exc}"}
        out.append(row)
    return out


# ----------------------------------------------------------------------------- one family, the table


@dataclass
class FamilyRun:
    """Rows of one family and what was timed (for the tests: the latents, decoder, plan and geometry)."""

    family: str
    rows: list[dict]
    info: dict
    z: torch.Tensor | None = None
    decode: VaeDecoder | None = None
    plan: Any = None
    geometry: Any = None


def run_family(spec: FamilySpec, *, tiny: bool, device: torch.device, dtype: torch.dtype, images: int,
               geometry_samples: int, attack_names: list[str], timesteps: list[int] | None = None,
               repeats: int = 3) -> FamilyRun:
    """Build ``spec`` and time its products, geometry and attacks (rows as in the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        t_build, b = timed(lambda: build_family(spec, tiny=tiny, device=device, dtype=dtype, folder=Path(tmp)), device)
    info = {"family": spec.name, "latent": list(b.latent), "d": math.prod(b.latent), "parameters": b.parameters,
            "build_seconds": t_build, "dtype": str(dtype).replace("torch.", ""), "tiny": tiny}
    run = FamilyRun(spec.name, [], info, decode=b.decode)
    z = latents(b.latent, max(images, geometry_samples), device=device, dtype=dtype)
    run.rows += _guarded(lambda: product_rows(b, z[:1], device, repeats), ("jvp", "vjp"))
    try:
        row, run.plan, run.geometry = geometry_row(b, z[:geometry_samples], device)
        run.z = z[:geometry_samples]
        run.rows.append(row)
    except (RuntimeError, ValueError) as exc:  # e.g. out of memory, a dtype the geometry refuses
        run.rows.append({"step": "geometry", "seconds": None, "per": "sample", "error": f"{type(exc).__name__}: {exc}"})
    run.rows += attack_rows(b, z[:images], attack_names, device, timesteps)
    for row in run.rows:
        row["family"] = spec.name
    del b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return run


def _guarded(fn: Callable[[], list[dict]], steps: tuple[str, ...]) -> list[dict]:
    try:
        return fn()
    except (RuntimeError, ValueError) as exc:
        return [{"step": s, "seconds": None, "error": f"{type(exc).__name__}: {exc}"} for s in steps]


TABLE_HEADER = ("family", "step", "seconds", "per", "peak GiB", "resident GiB", "engine / paths / error")


def table(rows: list[dict]) -> str:
    """The markdown table of the rows (one per family and step)."""
    body = []
    for r in rows:
        what = r.get("error") or r.get("paths") or r.get("engine") or ""
        body.append((r["family"], r["step"], r.get("seconds"), r.get("per", ""), r.get("peak_gib"),
                     r.get("resident_gib"), what[:90]))
    return common.markdown_table(TABLE_HEADER, body)


def _device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": device.type}
    p = torch.cuda.get_device_properties(device)
    return {"type": "cuda", "name": p.name, "memory_gib": p.total_memory / 2**30, "cuda": torch.version.cuda}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="sd1,sdxl,flux", help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated: " + ", ".join(ATTACKS))
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--device", default="cuda", help="cuda[:i]; cpu only with --dry-run")
    ap.add_argument("--images", type=int, default=4, help="images per attack batch (seconds are per image)")
    ap.add_argument("--geometry-samples", type=int, default=2, help="latents of the timed geometry")
    ap.add_argument("--timesteps", default=None,
                    help="comma-separated timesteps for every attack (default: each attack's own grid)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="tiny configurations (a check of the code path)")
    ap.add_argument("--dry-run", action="store_true", help="print only; allows --device cpu")
    ap.add_argument("--out", type=Path, default=None, help=f"JSON path (default {OUT_JSON}; none with --dry-run)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    """Run the benchmark; returns the JSON document (None when skipped)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return None
    if device.type != "cuda" and not args.dry_run:
        print(f"--device {args.device}: only with --dry-run (benchmarks/gpu.json holds GPU numbers)")
        return None
    names = [f.strip() for f in args.families.split(",") if f.strip()]
    attack_names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = [f for f in names if f not in FAMILIES] + [a for a in attack_names if a not in ATTACKS]
    if bad:
        raise SystemExit(f"unknown family / attack: {', '.join(bad)}")
    timesteps = None if args.timesteps is None else [int(t) for t in args.timesteps.split(",") if t.strip()]
    if args.threads:
        common.set_threads(args.threads)
    rows, infos = [], []
    for name in names:  # one family on the device at a time
        run = run_family(FAMILIES[name], tiny=args.tiny, device=device, dtype=DTYPES[args.dtype], images=args.images,
                         geometry_samples=args.geometry_samples, attack_names=attack_names, timesteps=timesteps)
        rows += run.rows
        infos.append(run.info)
        print(table(run.rows), flush=True)
        del run  # its decoder holds the VAE: free it before the next family is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
    doc = {"benchmark": "bench_gpu", "created": common.now_iso(), "device": _device_info(device),
           "torch": torch.__version__, "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "dtype": args.dtype, "images": args.images,
           "timesteps": timesteps or "each attack's default", "families": infos, "rows": rows,
           "text_encoders": ("tiny random CLIP / T5 (tiny widths)" if args.tiny else
                             "random stand-ins of the real widths (2-layer CLIP, 1-layer T5), real token counts")}
    print("\n" + table(rows))
    out = args.out if args.out is not None else (None if args.dry_run else OUT_JSON)
    if out is not None:
        Path(out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
    sys.exit(0)
