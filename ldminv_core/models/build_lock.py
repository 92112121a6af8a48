"""One model load at a time in a process.

diffusers and transformers build a model's modules under accelerate's ``init_empty_weights``,
which patches ``torch.nn.Module.register_parameter`` for the whole process while it runs: a
module built meanwhile on another thread gets its parameters on the meta device ("Cannot copy out
of meta tensor"), and two loads that overlap can restore each other's patch. The dashboard loads
models on several threads (a page, an analysis job, the background preload of a small model), so
every ``from_pretrained`` of this package runs under :data:`MODEL_BUILD_LOCK`.
"""
from __future__ import annotations

import threading

__all__ = ["MODEL_BUILD_LOCK"]

#: Held around every ``from_pretrained`` of ldminv (re-entrant: a load may load its parts).
MODEL_BUILD_LOCK = threading.RLock()
