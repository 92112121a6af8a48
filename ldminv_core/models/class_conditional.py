"""Class-conditional model families: a ``UNet2DModel`` with class embeddings and DiT.

METHOD.md section 5: a class-conditional model is conditioned on the image's class label, read
from the ``label`` column of the folder's ``metadata.jsonl`` / ``metadata.csv``
(:mod:`ldminv_core.data.captions`), else on the model's null class when it has one (DiT trained
with label dropout: class ``num_classes``, the class ``pipeline_dit.py`` uses for its
unconditional half); a model without a null class refuses an image without a label, naming the
column to add. Guidance is off: one model call per evaluation, as ``pipeline_dit.py`` calls the
transformer with ``guidance_scale <= 1`` (``transformer(x, timestep=t, class_labels=y)``, the
first ``in_channels`` output channels when the model learns its variance).

The label reaches the model through the same path as a caption: the attacks hand a batch's
"captions" to :meth:`NoisePrediction.encode_prompts`; for these families the pipeline hands
the labels instead (``conditions_on == "label"``), and the conditioning is the (B, 1, 1) int64
tensor of class indices. Detection (:func:`class_conditional_kind`) lives here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import EmptyInputError, LdminvError, ShapeError, UnknownNameError
from .noise_prediction import PREDICTION_TYPES, NoisePrediction

__all__ = [
    "LABEL_COLUMN",
    "MissingLabelError",
    "ClassConditionalPrediction",
    "ClassUNetPredictor",
    "DiTPredictor",
    "class_conditional_kind",
    "class_conditional_predictor",
]

LABEL_COLUMN = "label"
"""The metadata column (metadata.jsonl / metadata.csv) holding each image's integer class."""

_DIT_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")


class MissingLabelError(LdminvError):
    """An image has no class label and the model has no null class to fall back on."""


def class_conditional_kind(class_name: Any, config: Mapping[str, Any]) -> str | None:
    """"class_unet" or "dit" when a denoiser config (its ``_class_name`` and config dict) is a
    class-conditional family of this module, else None."""
    if class_name == "UNet2DModel":
        if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
            return "class_unet"
        return None
    # DiTTransformer2DModel defaults to ada_norm_zero; the legacy Transformer2DModel must say so
    default_norm = "ada_norm_zero" if class_name == "DiTTransformer2DModel" else "layer_norm"
    if class_name in _DIT_CLASSES and config.get("num_embeds_ada_norm") is not None \
            and config.get("norm_type", default_norm) == "ada_norm_zero":
        return "dit"
    return None


@dataclass(eq=False)
class ClassConditionalPrediction(NoisePrediction):
    """eps_hat(z_t, t, y) of a class-conditional denoiser; ``cond`` is (B, 1, 1) int64 labels.

    Attributes:
        model: the diffusers denoiser (UNet2DModel or DiT transformer).
        alphas_cumprod, prediction_type, device, dtype: as :class:`NoisePredictor`.
        num_classes: classes the model was trained on (labels 0..num_classes-1), None if unknown.
        null_class: the class index meaning "no class" (DiT: num_classes), None when the model has none.
    """

    model: torch.nn.Module = field(repr=False)
    alphas_cumprod: torch.Tensor = field(repr=False)
    prediction_type: str = "epsilon"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    num_classes: int | None = None
    null_class: int | None = None

    conditions_on = "label"
    family = "class-conditional"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise UnknownNameError(
                f"prediction_type: expected one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise LdminvError(f"dtype: expected a floating torch.dtype, got {self.dtype!r}")
        self.device = torch.device(self.device)
        self.is_conditional = True
        self._init_schedule(self.alphas_cumprod)

    @property
    def in_channels(self) -> int:
        """Latent channels the denoiser expects."""
        return int(self.model.config.in_channels)

    def _label(self, i: int, y: Any) -> int:
        """The class index for label ``y`` of row ``i`` (None -> the null class)."""
        if y is None:
            if self.null_class is None:
                raise MissingLabelError(
                    f"labels[{i}]: the image has no class label and this {type(self.model).__name__} has no "
                    f"null class to fall back on; add a '{LABEL_COLUMN}' column (integer class) to the "
                    "image folder's metadata.jsonl or metadata.csv"
                )
            return self.null_class
        if isinstance(y, bool) or not isinstance(y, (int, np.integer)):
            raise LdminvError(f"labels[{i}]: expected an integer class label or None, got {type(y).__name__} {y!r}")
        y = int(y)
        top = self.num_classes if self.null_class is None else self.null_class + 1
        if y < 0 or (top is not None and y >= top):
            raise LdminvError(f"labels[{i}]: class {y} is outside the model's classes 0..{(top or 1) - 1}")
        return y

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[int | None]) -> torch.Tensor:
        """(B, 1, 1) int64 class indices of the labels (None -> the null class, refused when the
        model has none). The sequence holds labels, not captions, for this family."""
        if isinstance(captions, (str, bytes)):
            raise LdminvError("labels: expected a sequence of integer labels (or None), got a single string")
        labels = list(captions)
        if not labels:
            raise EmptyInputError("labels: expected at least one label, got an empty sequence")
        idx = [self._label(i, y) for i, y in enumerate(labels)]
        return torch.tensor(idx, dtype=torch.long, device=self.device).view(-1, 1, 1)

    def _empty_prompt(self) -> torch.Tensor:
        """The null class (1, 1, 1), as the conditioning of an image without a label."""
        if self._empty_cond is None:
            self._empty_cond = self.encode_prompts([None])
        return self._empty_cond

    def _check_cond(self, cond: Any, b: int) -> torch.Tensor:
        """``cond`` (b or 1, 1, 1) integer labels on the device (the null class when None)."""
        if cond is None:
            cond = self._empty_prompt()
        if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] not in (1, b) \
                or tuple(cond.shape[1:]) != (1, 1) or cond.is_floating_point() or cond.is_complex():
            raise ShapeError(
                f"cond: expected integer class labels of shape ({b} or 1, 1, 1) from encode_prompts, "
                f"got {tuple(getattr(cond, 'shape', ()))} {getattr(cond, 'dtype', type(cond).__name__)}"
            )
        cond = cond.to(self.device, torch.long)
        return cond.expand(b, -1, -1) if cond.shape[0] != b else cond

    def _labels(self, cond: torch.Tensor | None, b: int) -> torch.Tensor:
        if cond is None:
            cond = self._empty_prompt()
        labels = cond.reshape(-1).to(self.device, torch.long)
        return labels.expand(b) if labels.numel() == 1 and b != 1 else labels


@dataclass(eq=False)
class ClassUNetPredictor(ClassConditionalPrediction):
    """A diffusers ``UNet2DModel`` with class embeddings (``num_class_embeds``, or
    ``class_embed_type="timestep"``), called as ``unet(x, t, class_labels=y)``; no null class."""

    family = "class-unet"

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        ts = torch.full((x.shape[0],), t, dtype=torch.long, device=self.device)
        return self.model(x, ts, class_labels=self._labels(cond, x.shape[0]), return_dict=False)[0]


@dataclass(eq=False)
class DiTPredictor(ClassConditionalPrediction):
    """A DiT (``DiTTransformer2DModel`` / ``Transformer2DModel`` with ada_norm_zero), called as
    ``pipeline_dit.py`` calls it with guidance off: ``transformer(x, timestep=t, class_labels=y)``;
    null class ``num_classes`` when the label embedding has that extra row."""

    family = "dit"

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        ts = torch.full((x.shape[0],), t, dtype=torch.long, device=self.device)
        return self.model(x, timestep=ts, class_labels=self._labels(cond, x.shape[0]), return_dict=False)[0]


def _dit_classes(model: torch.nn.Module) -> tuple[int, int | None]:
    """(num_classes, null class or None) of a DiT: the null class exists when its label
    embedding table has num_classes + 1 rows (trained with label dropout)."""
    from diffusers.models.embeddings import LabelEmbedding

    num = int(model.config.num_embeds_ada_norm)
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            rows = int(module.embedding_table.num_embeddings)
            return int(module.num_classes), (int(module.num_classes) if rows > module.num_classes else None)
    return num, None


def _check_unet_classes(unet: torch.nn.Module) -> int | None:
    """num_class_embeds of a class-conditional UNet2DModel; refuses class_embed_type "identity"
    (its class_labels are embeddings, not integer classes)."""
    cfg = unet.config
    kind = cfg.get("class_embed_type")
    if kind not in (None, "timestep"):
        raise LdminvError(
            f"unet: UNet2DModel with class_embed_type={kind!r} takes class embeddings, not integer class labels; "
            "expected num_class_embeds (a class embedding table) or class_embed_type='timestep'"
        )
    n = cfg.get("num_class_embeds")
    return None if n is None else int(n)


def class_conditional_predictor(
    model: torch.nn.Module,
    scheduler: Any,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ClassConditionalPrediction:
    """The noise prediction of a class-conditional denoiser and its scheduler, the model moved
    to ``device`` / ``dtype`` in eval mode.

    Raises:
        LdminvError: the model is neither a class-conditional UNet2DModel nor a DiT; the
            scheduler has no ``alphas_cumprod``.
    """
    from .noise_prediction import _place

    name = type(model).__name__
    config = getattr(model, "config", {})
    kind = class_conditional_kind(name, config if hasattr(config, "get") else {})
    if kind is None:
        raise LdminvError(
            f"model: expected a class-conditional UNet2DModel (num_class_embeds / class_embed_type) or a DiT "
            f"({' / '.join(_DIT_CLASSES)} with num_embeds_ada_norm), got {name}"
        )
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None:
        raise LdminvError(
            f"scheduler: expected a scheduler with alphas_cumprod (e.g. DDPMScheduler), got {type(scheduler).__name__}"
        )
    cfg = getattr(scheduler, "config", None)
    prediction_type = cfg.get("prediction_type") if hasattr(cfg, "get") else getattr(cfg, "prediction_type", None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LdminvError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    device = torch.device(device)
    _place(model, device, dtype)
    if kind == "dit":
        num, null = _dit_classes(model)
        cls: type[ClassConditionalPrediction] = DiTPredictor
    else:
        num, null, cls = _check_unet_classes(model), None, ClassUNetPredictor
    return cls(
        model=model,
        alphas_cumprod=torch.as_tensor(alphas).detach().to("cpu", torch.float64),
        prediction_type=str(prediction_type or "epsilon"),
        device=device,
        dtype=dtype,
        num_classes=num,
        null_class=null,
    )
