"""Attack benchmark: each attack's wall time against the bare UNet forward passes it needs.

For every attack (sima, pia, loss, secmi via ``attack_terms``; pfami via ``pfami_scores``)
the UNet forward calls of a timed run are counted with a forward hook; the floor ("bare")
is the same number of ``unet(x, t)`` calls, made directly in a loop under ``torch.no_grad``
with the same batch shapes, dtype and timesteps. overhead ratio = attack time / bare time
(everything the attack adds: noise, DDIM updates, |.|^p, copies, validation). Attack and
bare runs alternate, ``repeats`` times; the fastest run of each is compared (the run least
disturbed by other processes). A second ratio needs no second run: the attack's wall time
over the time spent inside its own UNet calls (forward hooks), measured in the same run.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch

from benchmarks import common
from ldminv_core import attacks

__all__ = ["run_attacks", "count_unet_calls"]


class count_unet_calls:
    """Context manager recording each forward call of ``unet``: its batch size and wall time.

    ``batches`` lists the batch size of every call; ``unet_s`` is the total wall time spent
    inside the calls (from a forward pre-hook to a forward hook).
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.batches: list[int] = []
        self.unet_s = 0.0
        self._t0 = 0.0
        self._handles: list[Any] = []

    def __enter__(self) -> "count_unet_calls":
        def pre(module, args, kwargs):
            x = args[0] if args else kwargs["sample"]
            self.batches.append(int(x.shape[0]))
            self._t0 = time.perf_counter()

        def post(module, args, kwargs, output):
            self.unet_s += time.perf_counter() - self._t0

        self._handles = [
            self.unet.register_forward_pre_hook(pre, with_kwargs=True),
            self.unet.register_forward_hook(post, with_kwargs=True),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()


def _bare(unet: torch.nn.Module, batches: Sequence[int], timesteps: Sequence[int], latent_shape: tuple[int, ...]) -> float:
    """Wall time of ``unet(x, t)`` for each batch size in ``batches`` (no_grad, float32)."""
    xs = {b: torch.randn(b, *latent_shape) for b in set(batches)}
    ts = [int(timesteps[i % len(timesteps)]) for i in range(len(batches))]
    t0 = time.perf_counter()
    with torch.no_grad():
        for b, t in zip(batches, ts):
            unet(xs[b], torch.full((b,), t, dtype=torch.long), return_dict=False)
    return time.perf_counter() - t0


def run_attacks(
    model: common.DemoModel,
    *,
    n: int,
    timesteps: Sequence[int],
    batch_size: int = 64,
    repeats: int = 3,
    names: Sequence[str] = attacks.ATTACKS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every attack on ``n`` latents against its bare UNet floor.

    Returns a JSON-ready dict: per attack the median attack and bare times, the overhead
    ratio, samples per second and the UNet calls per run; ``overhead_ratio`` is the largest
    ratio over the attacks.
    """
    predictor = attacks.NoisePredictor.from_components(model.unet, model.scheduler, device="cpu", dtype=torch.float32)
    latent_shape = (int(model.unet.config.in_channels), int(model.unet.config.sample_size), int(model.unet.config.sample_size))
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, *latent_shape, generator=gen)
    ts = list(timesteps)

    def run(name: str):
        if name == "pfami":
            return attacks.pfami_scores(predictor, z0, batch_size=batch_size)
        return attacks.attack_terms(name, predictor, z0, timesteps=ts, batch_size=batch_size)

    with torch.no_grad():  # warm-up of the UNet at the benchmark's batch size
        model.unet(torch.randn(batch_size, *latent_shape), torch.zeros(batch_size, dtype=torch.long))
    per: dict[str, Any] = {}
    for name in names:
        log(f"  attacks: {name} ...")
        a_times, b_times, in_unet, calls = [], [], [], None
        for _ in range(repeats):
            with count_unet_calls(model.unet) as counter:
                t_attack, _ = common.time_call(lambda: run(name))
            calls = counter.batches
            a_times.append(t_attack)
            in_unet.append(counter.unet_s)
            with count_unet_calls(model.unet):  # the same hooks on the floor's calls
                b_times.append(_bare(model.unet, calls, attacks.PFAMI_TIMESTEPS if name == "pfami" else ts, latent_shape))
        t_a, t_b = min(a_times), min(b_times)
        per[name] = {
            "attack_s": t_a,
            "bare_s": t_b,
            "overhead_ratio": t_a / t_b,
            "overhead_ratio_median": statistics.median(a_times) / statistics.median(b_times),
            "overhead_ratio_in_run": statistics.median([a / u for a, u in zip(a_times, in_unet)]),
            "samples_per_s": n / t_a,
            "unet_calls": len(calls),
            "unet_calls_per_batch": len(calls) / -(-n // batch_size),
            "attack_s_runs": a_times,
            "bare_s_runs": b_times,
            "attack_s_inside_unet_runs": in_unet,
        }
    return {
        "model": model.source,
        "unet": model.unet_config,
        "n": n,
        "batch_size": batch_size,
        "timesteps": f"{ts[0]}:{ts[-1] + (ts[1] - ts[0] if len(ts) > 1 else 1)}:{ts[1] - ts[0] if len(ts) > 1 else 1}"
        f" ({len(ts)} steps; pfami uses its own {len(attacks.PFAMI_TIMESTEPS)} steps x "
        f"{1 + len(attacks.PFAMI_STRENGTHS)} variants)",
        "repeats": repeats,
        "method": "attack and bare runs alternate `repeats` times; overhead_ratio = fastest attack run / "
        "fastest bare run (the minimum is the run least disturbed by other processes; the ratio of "
        "medians is kept as overhead_ratio_median); bare = the same number of direct unet(x, t) calls "
        "with the same batch sizes under torch.no_grad; overhead_ratio_in_run = attack wall time / "
        "time spent inside its own UNet calls (measured in the same run, so insensitive to load "
        "changes between runs); float32 on CPU",
        "per_attack": per,
        "overhead_ratio": max(v["overhead_ratio"] for v in per.values()),
        "overhead_ratio_worst_attack": max(per, key=lambda k: per[k]["overhead_ratio"]),
    }
