"""A model's TorchScript export: its UNet and VAE encoder, loaded with torch alone.

Loading a diffusers model imports diffusers, which imports every model class it has (all
autoencoders, UNets and transformers), peft, transformers and ``torch._dynamo``: about 5 s on a
2-core machine before a single weight is read. The dashboard's quick preview of the demo needs
only two forward passes (the VAE encoder's mean and the UNet's output), so the demo ships them
traced to TorchScript (``assets/demo/traced``, written by ``scripts/export_demo_traced.py``), and
the preview loads them with ``torch.jit.load`` in a tenth of a second.

An export is used only when it provably belongs to the model it stands for:

1. :func:`export_traced` traces an unconditional ``UNet2DModel`` (DDPM-family schedule) and its
   ``AutoencoderKL`` encoder, checks the traced outputs against the diffusers modules on probe
   batches of several sizes and timesteps (refusing to write an export that differs by more than
   :data:`EXPORT_ATOL`), and writes ``manifest.json``: the SHA-256 of every file of the model
   folder it came from, the schedule's ``alphas_cumprod``, the prediction type, the latent
   scaling, the shapes and the largest difference measured;
2. :func:`load_traced` hashes the model folder's files again and refuses the export
   (:class:`TracedExportError`, naming the file) unless every one is unchanged; it returns a
   :class:`~ldminv_core.models.loading.LoadedModel` whose ``export`` field records all of this,
   so run.json says which model code computed the run.

TorchScript, not ``torch.export``: loading an exported program imports ``torch._dynamo`` (seconds,
the cost this module exists to avoid), so the export is traced and read with ``torch.jit``, whose
deprecation warnings are silenced where it is used here.

The export has no decoder: a run that needs the decoder geometry computed (not reused from a
precomputed bundle) fails with :class:`TracedExportError` and is resumed with the diffusers model
(:func:`ldminv_core.first_start.run_demo_preview` does this). It runs on the CPU in float32.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from ..errors import TracedExportError
from .noise_prediction import NoisePrediction

__all__ = ["EXPORT_FORMAT", "EXPORT_ATOL", "TracedExportError", "TracedNoisePredictor", "export_traced",
           "load_traced", "source_digests"]

EXPORT_FORMAT = "ldminv-torchscript-1"
#: Largest absolute difference between traced and diffusers outputs an export may have.
EXPORT_ATOL = 1e-5
_MANIFEST = "manifest.json"
_UNET_FILE = "unet.pt"
_ENCODER_FILE = "vae_encoder.pt"
#: The parts of a model folder whose files an export is tied to.
_PARTS = ("unet", "vae", "scheduler")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digests(model_dir: str | Path) -> dict[str, str]:
    """SHA-256 of every file of ``model_dir``'s unet/, vae/, scheduler/ and model_index.json,
    keyed by path relative to ``model_dir`` (POSIX separators, sorted)."""
    root = Path(model_dir)
    files = [root / "model_index.json"] if (root / "model_index.json").is_file() else []
    for part in _PARTS:
        folder = root / part
        files += sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return {path.relative_to(root).as_posix(): _sha256(path) for path in files}


class _UNetOutput(torch.nn.Module):
    """The UNet's raw output (B, C, h, w) for latents x (B, C, h, w) and timesteps t (B,) int64."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, return_dict=False)[0]


class _EncoderMoments(torch.nn.Module):
    """The VAE encoder's posterior mean and std (B, C, h, w) for images x (B, C_img, H, W)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(x).latent_dist
        return dist.mean, dist.std


@dataclass(eq=False)
class TracedNoisePredictor(NoisePrediction):
    """eps_hat of an unconditional traced UNet (:data:`_UNET_FILE`) with its stored schedule."""

    unet: Any = field(repr=False)
    alphas_cumprod: torch.Tensor = field(repr=False)
    prediction_type: str = "epsilon"
    channels: int = 4
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.is_conditional = False
        self._init_schedule(self.alphas_cumprod)

    @property
    def in_channels(self) -> int:
        return int(self.channels)

    def encode_prompts(self, captions: Sequence[str | None]) -> None:
        """None: the traced UNet is unconditional (captions ignored)."""
        return None

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        ts = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        return self.unet(x, ts)


class _TracedEncoder:
    """What ``LoadedModel.encode`` and ``encode_latents`` ask of a VAE: ``encode(x).latent_dist``
    with ``mean`` and ``std``; ``decode`` is absent (:class:`TracedExportError`)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        mean, std = self.module(x)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=std))

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        raise TracedExportError("the model's TorchScript export has no decoder; load the diffusers model "
                                "to compute the decoder geometry or decode latents")


def _probe_differences(model: Any, unet_ts: Any, enc_ts: Any, *, batch_sizes: Sequence[int],
                       timesteps: Sequence[int]) -> dict[str, float]:
    """Largest |traced - diffusers| of the UNet output and of the encoder moments on random probes."""
    gen = torch.Generator().manual_seed(0)
    encoder, unet = _EncoderMoments(model.vae), _UNetOutput(model.unet)
    worst = {"unet": 0.0, "encoder": 0.0}
    with torch.no_grad():
        for b in batch_sizes:
            x = torch.randn(b, *model.image_shape, generator=gen).clamp(-1, 1)
            diffs = [(r - g).abs().max().item() for r, g in zip(encoder(x), enc_ts(x))]
            worst["encoder"] = max(worst["encoder"], *diffs)
            z = torch.randn(b, *model.latent_shape, generator=gen)
            for t in timesteps:
                ts = torch.full((b,), int(t), dtype=torch.long)
                worst["unet"] = max(worst["unet"], (unet(z, ts) - unet_ts(z, ts)).abs().max().item())
    return worst


def export_traced(model_dir: str | Path, out_dir: str | Path, *, trace_batch: int = 100,
                  check_batch_sizes: Sequence[int] = (1, 7, 100, 128)) -> dict:
    """Trace ``model_dir``'s UNet and VAE encoder into ``out_dir``; returns the manifest written.

    Args:
        model_dir: a diffusers pipeline folder with an unconditional ``UNet2DModel`` and a
            DDPM-family scheduler (``alphas_cumprod``).
        out_dir: created if needed; ``unet.pt``, ``vae_encoder.pt`` and ``manifest.json`` are
            (over)written.
        trace_batch: batch size of the example inputs of the trace.
        check_batch_sizes: probe batch sizes of the comparison with the diffusers modules.

    Raises:
        TracedExportError: the model is not an unconditional UNet2DModel with a DDPM-family
            schedule, or a traced output differs from the diffusers one by more than :data:`EXPORT_ATOL`.
        ModelLoadError: the folder cannot be loaded.
    """
    from importlib import metadata

    from .loading import load_model

    # 1. the diffusers model, on the CPU in float32
    model = load_model(model_dir, device="cpu", dtype=torch.float32)
    cls = type(model.unet).__name__
    if cls != "UNet2DModel" or model.is_conditional or model.predictor.alphas_cumprod is None:
        raise TracedExportError(f"{model_dir}: a TorchScript export covers unconditional UNet2DModel models with "
                                f"a DDPM-family schedule; got {cls} (family {getattr(model.family, 'name', None)})")
    # 2. trace both modules on example inputs
    c, h, w = model.latent_shape
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(trace_batch, c, h, w, generator=gen)
    ts = torch.full((trace_batch,), 1, dtype=torch.long)
    x = torch.randn(trace_batch, *model.image_shape, generator=gen).clamp(-1, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants (same shapes)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit (see the module's docstring)
        unet_ts = torch.jit.trace(_UNetOutput(model.unet).eval(), (z, ts), check_trace=False)
        enc_ts = torch.jit.trace(_EncoderMoments(model.vae).eval(), (x,), check_trace=False)
    # 3. compare with the diffusers modules; refuse an export that differs
    n = model.predictor.num_train_timesteps
    worst = _probe_differences(model, unet_ts, enc_ts, batch_sizes=check_batch_sizes,
                               timesteps=sorted({0, n // 10, n // 2, n - 1}))
    if max(worst.values()) > EXPORT_ATOL:
        raise TracedExportError(f"{model_dir}: the traced modules differ from the diffusers ones by {worst} "
                                f"(largest allowed {EXPORT_ATOL}); not written")
    # 4. write the modules and the manifest
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.jit.save(unet_ts, str(out / _UNET_FILE))
    torch.jit.save(enc_ts, str(out / _ENCODER_FILE))
    manifest = {
        "format": EXPORT_FORMAT,
        "unet_class": cls,
        "family": getattr(model.family, "name", None),
        "source_sha256": source_digests(model_dir),
        "files_sha256": {name: _sha256(out / name) for name in (_UNET_FILE, _ENCODER_FILE)},
        "alphas_cumprod": [float(a) for a in model.predictor.alphas_cumprod.tolist()],
        "prediction_type": model.predictor.prediction_type,
        "scaling_factor": model.scaling_factor,
        "shift_factor": model.shift_factor,
        "image_shape": list(model.image_shape),
        "latent_shape": list(model.latent_shape),
        "checked": {"max_abs_diff": worst, "batch_sizes": list(check_batch_sizes), "atol": EXPORT_ATOL},
        "versions": {"torch": torch.__version__, "diffusers": metadata.version("diffusers")},
    }
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _read_manifest(export_dir: Path) -> dict:
    path = export_dir / _MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TracedExportError(f"{path}: expected a TorchScript export's manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise TracedExportError(f"{path}: expected format {EXPORT_FORMAT!r}, got {got!r}")
    return manifest


def _check_sources(model_dir: Path, manifest: dict, export_dir: Path) -> None:
    """TracedExportError unless the export's own files are those it wrote and ``model_dir``'s files
    are exactly those it was made from."""
    for name, digest in (manifest.get("files_sha256") or {}).items():
        path = export_dir / name
        if not path.is_file() or _sha256(path) != digest:
            raise TracedExportError(f"{path}: missing or not the file the export wrote (SHA-256 differs)")
    if set(manifest.get("files_sha256") or {}) != {_UNET_FILE, _ENCODER_FILE}:
        raise TracedExportError(f"{export_dir / _MANIFEST}: expected the SHA-256 of {_UNET_FILE} and {_ENCODER_FILE}")
    stored, now = manifest.get("source_sha256") or {}, source_digests(model_dir)
    for name in sorted(set(stored) | set(now)):
        if stored.get(name) != now.get(name):
            state = "is missing" if name not in now else ("was not in the model" if name not in stored else "changed")
            raise TracedExportError(f"{export_dir}: exported from another model: {model_dir / name} {state} "
                                    "since the export was made (scripts/export_demo_traced.py remakes it)")


def load_traced(model_dir: str | Path, export_dir: str | Path, *, device: str | torch.device = "cpu"):
    """The :class:`~ldminv_core.models.loading.LoadedModel` of ``model_dir`` from its export in
    ``export_dir``, after checking that every file of ``model_dir`` is the one it was made from.

    Latents (N, *latent_shape), images (N, *image_shape) as for a diffusers model; ``vae`` only
    encodes and ``unet`` is the traced module. ``LoadedModel.export`` records the export.

    Raises:
        TracedExportError: no export, another format, a model file changed since the export, or
            a device other than the CPU.
    """
    from .families import family_by_name
    from .loading import LoadedModel

    # 1. the manifest, and the model's files against it
    model_dir, export_dir = Path(model_dir).resolve(), Path(export_dir)
    dev = torch.device(device)
    if dev.type != "cpu":
        raise TracedExportError(f"{export_dir}: a TorchScript export runs on the CPU; got device {dev}")
    manifest = _read_manifest(export_dir)
    _check_sources(model_dir, manifest, export_dir)
    # 2. the traced modules
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit (see the module's docstring)
            unet = torch.jit.load(str(export_dir / _UNET_FILE), map_location=dev).eval()
            encoder = torch.jit.load(str(export_dir / _ENCODER_FILE), map_location=dev).eval()
    except (OSError, RuntimeError, ValueError) as exc:
        raise TracedExportError(f"{export_dir}: cannot load the traced modules: {exc}") from exc
    # 3. the noise-prediction view and the model record
    latent_shape = tuple(int(v) for v in manifest["latent_shape"])
    image_shape = tuple(int(v) for v in manifest["image_shape"])
    predictor = TracedNoisePredictor(unet=unet, alphas_cumprod=torch.tensor(manifest["alphas_cumprod"],
                                                                             dtype=torch.float64),
                                     prediction_type=str(manifest["prediction_type"]), channels=latent_shape[0],
                                     device=dev, dtype=torch.float32)
    record = {"format": EXPORT_FORMAT, "folder": str(export_dir.resolve()), "unet_class": manifest["unet_class"],
              "checked": manifest.get("checked"), "versions": manifest.get("versions"),
              "sources": "every model file's SHA-256 equals the export's manifest"}
    return LoadedModel(vae=_TracedEncoder(encoder), unet=unet, scheduler=None, text_encoder=None, tokenizer=None,
                       predictor=predictor, scaling_factor=float(manifest["scaling_factor"]),
                       image_channels=image_shape[0], resolution=image_shape[1], latent_shape=latent_shape,
                       is_conditional=False, source=str(model_dir), device=dev, dtype=torch.float32,
                       shift_factor=float(manifest.get("shift_factor") or 0.0),
                       family=family_by_name(manifest["family"]) if manifest.get("family") else None,
                       export=record)
