"""Decoder geometry of ``analyze`` against the paper's own released functions, side by side.

Run from the repository root, with a local checkout of the paper's code (the authors'
``VAE2Diffusion`` repository; only ``ldm_light/cal_pullback.py`` and
``ldm_light/cal_per_dim_contri.py`` are read)::

    python -m benchmarks.bench_paper_geometry --paper-repo /path/to/VAE2Diffusion
    python -m benchmarks.bench_paper_geometry                   # the paper arm is skipped

In one process at 1 torch thread, on the demo decoder (``assets/demo/model``, latents of the
first N demo member images), three arms compute the per-sample log-volume and per-coordinate
influence of the same latents through the same map ``z -> vae.decode(z / scaling_factor).sample``:

(a) ``paper``: the paper's ``compute_log_volume_per_sample_decoder`` (autograd Jacobian per
    sample, then power iteration; k = analyze's k unless ``--paper-k``, its ``--n-iter``
    default) and ``compute_per_dim_contrib_decoder`` (Hutchinson, its ``--n-mc`` default);
(b) ``reference``: :func:`benchmarks.reference_geometry.reference_geometry`, the project's
    re-implementation of that algorithm (30 QR power rounds, 16 probes);
(c) ``analyze``: the geometry stage's own call (:func:`ldminv_core.pipeline.rows._geometry_rows`,
    batches of ``AnalyzeConfig.batch_size``) with the plan the stage makes
    (:func:`ldminv_core.pipeline.geometry_paths._make_geometry_plan`, timed apart: once per run).

The paper's functions are loaded from the checkout at run time without importing its modules
(they import torchvision at the top): :func:`load_paper_functions` parses each file with
``ast``, keeps the needed function definitions and executes only those, in a namespace holding
torch, numpy, a silent tqdm and ``torch.autograd.functional.jacobian``. Nothing of the paper's
code is stored in this project. Their ``decoder.decode`` is :class:`PaperDecoder`, a wrapper
around the project's :class:`~ldminv_core.geometry.VaeDecoder`, so all arms differentiate the
same function.

Timing: ``rounds`` rounds of [analyze, paper, reference, analyze]; each arm's time is the mean
over its runs (analyze runs twice per round, before and after the long arms, so a drift of the
load reaches every arm alike); the load average (``os.getloadavg()``) is recorded next to
every timing. Accuracy: against the exact values (float64 SVD and column norms of the
``torch.autograd.functional.jacobian`` Jacobian, :func:`~benchmarks.reference_geometry.exact_geometry`).
Output: a printed table and ``benchmarks/paper_geometry.json``.
"""
from __future__ import annotations

import __future__
import argparse
import ast
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import math
from typing import List, Optional

import numpy as np
import torch

from benchmarks import common
from benchmarks.bench_geometry import geometry_errors
from benchmarks.reference_geometry import exact_geometry, reference_geometry

__all__ = ["PaperFunctionError", "PaperDecoder", "PaperFunctions", "load_paper_functions", "run_paper_geometry",
           "table", "main"]

OUT_JSON = common.REPO / "benchmarks" / "paper_geometry.json"

#: The files of the paper's checkout that are read, and the functions kept from each.
PAPER_FILES = {
    "ldm_light/cal_pullback.py": ("topk_singular_values_power", "compute_log_volume_per_sample_decoder"),
    "ldm_light/cal_per_dim_contri.py": ("compute_per_dim_contrib_decoder",),
}
#: The command-line defaults read from the same files (argparse ``--k``, ``--n-iter``, ``--n-mc``).
PAPER_OPTIONS = {"k": "--k", "n_iter": "--n-iter", "n_mc": "--n-mc"}

TABLE_HEADER = ("arm", "what", "s/sample", "x analyze", "CPU s/sample", "x analyze (CPU)", "max abs err influence", "rel err log-volume", "load (1 min)")


class PaperFunctionError(ValueError):
    """The paper's checkout lacks a file, a function or an option this benchmark reads."""


def _silent_tqdm(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    """``tqdm`` without a progress bar (the paper's loops print one per call)."""
    return iterable


def _argparse_defaults(tree: ast.Module) -> dict[str, Any]:
    """``{"--flag": default}`` of every ``add_argument("--flag", ..., default=<literal>)`` call."""
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument" and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        for kw in node.keywords:
            if kw.arg == "default":
                try:
                    found[str(node.args[0].value)] = ast.literal_eval(kw.value)
                except ValueError:
                    pass
    return found


@dataclass(frozen=True)
class PaperFunctions:
    """The paper's geometry functions, loaded from a checkout, and its command-line defaults.

    Attributes:
        log_volume: ``compute_log_volume_per_sample_decoder(decoder, z, device, k=..., n_iter=...)``.
        per_dim: ``compute_per_dim_contrib_decoder(decoder, z, device, n_mc=...)``.
        defaults: ``{"k", "n_iter", "n_mc"}`` from the files' argparse options.
        source: ``{relative path: [function names]}`` that were executed.
    """

    log_volume: Callable[..., np.ndarray]
    per_dim: Callable[..., np.ndarray]
    defaults: dict[str, Any]
    source: dict[str, list[str]]


def _paper_namespace() -> dict[str, Any]:
    """What the kept functions refer to at module level in the paper's files."""
    return {"__name__": "paper_functions", "torch": torch, "np": np, "nn": torch.nn, "F": torch.nn.functional,
            "math": math, "tqdm": _silent_tqdm, "jacobian": torch.autograd.functional.jacobian,
            "Optional": Optional, "List": List}


def load_paper_functions(repo: str | os.PathLike) -> PaperFunctions:
    """The paper's geometry functions from a checkout, without importing its modules.

    Each file of :data:`PAPER_FILES` is parsed with ``ast``; only the listed top-level function
    definitions are compiled (annotations left unevaluated) and executed, so the files' imports
    (torchvision, datasets) and scripts never run.

    Raises:
        PaperFunctionError: a file, function or argparse default is missing.
    """
    root = Path(repo).expanduser()
    ns = _paper_namespace()
    defaults: dict[str, Any] = {}
    source: dict[str, list[str]] = {}
    for rel, names in PAPER_FILES.items():
        path = root / rel
        if not path.is_file():
            raise PaperFunctionError(f"paper repo {root}: expected the file {rel}, not found")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        kept = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
        missing = sorted(set(names) - {n.name for n in kept})
        if missing:
            raise PaperFunctionError(f"{path}: expected the function(s) {', '.join(missing)}, not found")
        module = ast.Module(body=kept, type_ignores=[])
        code = compile(module, str(path), "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
        exec(code, ns)  # noqa: S102 - only the function definitions kept above
        source[rel] = [n.name for n in kept]
        flags = _argparse_defaults(tree)
        defaults.update({key: flags[flag] for key, flag in PAPER_OPTIONS.items() if flag in flags})
    missing = sorted(set(PAPER_OPTIONS) - set(defaults))
    if missing:
        raise PaperFunctionError(f"paper repo {root}: no argparse default for {', '.join(PAPER_OPTIONS[m] for m in missing)}")
    return PaperFunctions(log_volume=ns["compute_log_volume_per_sample_decoder"],
                          per_dim=ns["compute_per_dim_contrib_decoder"], defaults=defaults, source=source)


class PaperDecoder:
    """What the paper's functions take as ``decoder``: ``.to``, ``.eval`` and ``.decode(z)``.

    ``decode`` is the map the project's geometry differentiates (a
    :class:`~ldminv_core.geometry.VaeDecoder`: ``vae.decode(z / scaling_factor).sample``).
    """

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._decode = decode

    def to(self, device: Any) -> "PaperDecoder":
        return self

    def eval(self) -> "PaperDecoder":
        return self

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _timed(fn: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    """({"s": wall seconds, "cpu_s": process CPU seconds, "load_before", "load_after"}, result) of one call."""
    before = _load()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"s": wall, "cpu_s": cpu, "load_before": before, "load_after": _load()}, out


def _analyze_call(model: Any, decode: Callable, z: torch.Tensor, batch_size: int | None) -> tuple[Callable, dict]:
    """(run, info): ``run()`` is the geometry stage's call on every batch of ``z`` with the plan
    the stage makes (made here, once, and timed); returns (log-volume (N,), influence)."""
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.geometry_paths import _make_geometry_plan
    from ldminv_core.pipeline.plan import _plan
    from ldminv_core.pipeline.rows import _geometry_rows

    plan = _plan(AnalyzeConfig(model="model", members="members", heldout="heldout", out="out"))
    bs = plan.batch_size if batch_size is None else batch_size
    t_plan, gp = _timed(lambda: _make_geometry_plan(plan, decode, z[:1]))
    methods = {"influence": gp.influence_method, "log_volume_method": gp.log_volume_method,
               "probes_used": gp.probes_used}
    z_np = z.detach().cpu().numpy()
    n = z.shape[0]
    paths = [f"sample_{i}" for i in range(n)]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        infl, lv = [], []
        for start in range(0, n, bs):
            stop = min(n, start + bs)
            i_b, l_b = _geometry_rows(plan, model, decode, z_np, start, stop, methods, Path("."), paths)
            infl.append(torch.from_numpy(i_b))
            lv.append(torch.from_numpy(l_b))
        return torch.cat(lv), torch.cat(infl)

    info = {"plan": gp.describe(), "plan_s": t_plan, "engine": gp.engine, "topk": plan.topk,
            "influence": gp.influence_method, "log_volume_method": gp.log_volume_method, "batch_size": bs,
            "chunk_size": gp.chunk_size, "seed": plan.seed}
    return run, info


def _paper_call(fns: PaperFunctions, decode: Callable, z: torch.Tensor, *, k: int, n_iter: int, n_mc: int,
                seed: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """``run()``: the paper's two functions on every latent, (log-volume (N,), influence)."""
    dec = PaperDecoder(decode)
    device = torch.device("cpu")

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)  # their start blocks and probes draw from the global generator
        lv = fns.log_volume(dec, z, device, k=k, n_iter=n_iter)
        infl = fns.per_dim(dec, z, device, n_mc=n_mc)
        return torch.as_tensor(np.asarray(lv)), torch.as_tensor(np.asarray(infl)).reshape(z.shape)

    return run


def _mean(rows: list[dict], key: str = "s") -> float:
    return float(sum(r[key] for r in rows) / len(rows))


def run_paper_geometry(model: Any, decode: Callable, z: torch.Tensor, *, paper_repo: str | os.PathLike | None,
                       paper_k: int | None = None, rounds: int = 2, reference_iters: int = 30,
                       reference_probes: int = 16, batch_size: int | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """The three arms (module docstring) on latents ``z`` (N, C, h, w); a JSON-ready dict.

    ``model`` needs ``.device`` and ``.dtype`` (a :class:`~ldminv_core.models.loading.LoadedModel`);
    ``decode`` is its :class:`~ldminv_core.geometry.VaeDecoder`. ``paper_k`` None: analyze's k.
    Without ``paper_repo`` the paper arm is recorded as skipped.
    """
    n, latent_shape = int(z.shape[0]), tuple(z.shape[1:])
    analyze, info = _analyze_call(model, decode, z, batch_size)
    k = info["topk"]
    fns = None if paper_repo is None else load_paper_functions(paper_repo)
    arms: dict[str, Callable] = {"analyze": analyze}
    paper_settings: dict[str, Any] = {}
    if fns is not None:
        paper_settings = {"k": k if paper_k is None else paper_k, "n_iter": fns.defaults["n_iter"],
                          "n_mc": fns.defaults["n_mc"], "argparse_defaults": fns.defaults, "files": fns.source}
        arms["paper"] = _paper_call(fns, decode, z, k=paper_settings["k"], n_iter=paper_settings["n_iter"],
                                    n_mc=paper_settings["n_mc"], seed=0)
    arms["reference"] = lambda: (lambda r: (r.log_volume, r.influence, r.jacobians))(
        reference_geometry(decode, z, k=k, iters=reference_iters, probes=reference_probes, seed=0,
                           keep_jacobians=True))
    results: dict[str, Any] = {"analyze": analyze()}  # warm-up (allocations, kernel choices)
    timings: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(rounds):
        log(f"  round {r + 1}/{rounds}: " + ", ".join(["analyze", *[a for a in arms if a != "analyze"], "analyze"]))
        for name in ["analyze", *[a for a in arms if a != "analyze"], "analyze"]:
            t, out = _timed(arms[name])
            timings[name].append(t)
            results[name] = out
    exact_lv, exact_infl = exact_geometry(results["reference"][2], latent_shape, k=k)
    rows: dict[str, Any] = {}
    for name in arms:
        lv, infl = results[name][0], results[name][1]
        err = geometry_errors(lv, infl.reshape(n, *latent_shape), exact_lv, exact_infl)
        rows[name] = {"s_per_sample": _mean(timings[name]) / n, "cpu_s_per_sample": _mean(timings[name], "cpu_s") / n,
                      "runs": timings[name], **err}
    if fns is not None:
        k_paper = paper_settings["k"]
        if k_paper != k:  # its log-volume is scored against the exact top-k at its own k
            exact_lv_p, _ = exact_geometry(results["reference"][2], latent_shape, k=k_paper)
            rows["paper"].update(geometry_errors(results["paper"][0], results["paper"][1].reshape(n, *latent_shape),
                                                 exact_lv_p, exact_infl))
    base, base_cpu = rows["analyze"]["s_per_sample"], rows["analyze"]["cpu_s_per_sample"]
    for name, row in rows.items():
        row["x_analyze"] = row["s_per_sample"] / base
        row["x_analyze_cpu"] = row["cpu_s_per_sample"] / base_cpu
    with torch.no_grad():
        pixels = int(decode(z[:1])[0].numel())
    return {
        "n_samples": n, "latent_shape": list(latent_shape), "d": int(np.prod(latent_shape)), "pixels": pixels,
        "torch_threads": torch.get_num_threads(), "rounds": rounds, "analyze": info,
        "paper": paper_settings if fns is not None else {"skipped": "no --paper-repo given"},
        "reference": {"k": k, "iters": reference_iters, "probes": reference_probes},
        "arms": rows,
        "speedup_vs_paper": rows["paper"]["s_per_sample"] / base if "paper" in rows else None,
        "speedup_vs_reference": rows["reference"]["s_per_sample"] / base,
        "speedup_vs_paper_cpu_time": rows["paper"]["x_analyze_cpu"] if "paper" in rows else None,
        "exact_log_volume_range": [float(exact_lv.min()), float(exact_lv.max())],
    }


_WHAT = {
    "paper": "paper's functions (autograd Jacobian + power iteration; Hutchinson)",
    "reference": "project's re-implementation of the paper's algorithm",
    "analyze": "analyze's geometry stage call, with its plan",
}


def table(doc: dict[str, Any]) -> str:
    """The arms as a markdown table (seconds per sample, ratio to analyze, errors, load)."""
    rows = []
    for name, row in doc["arms"].items():
        rows.append((name, _WHAT[name], row["s_per_sample"], row["x_analyze"], row["cpu_s_per_sample"],
                     row["x_analyze_cpu"], row["max_abs_err_influence"],
                     row["rel_err_log_volume"], max(max(t["load_before"][0], t["load_after"][0]) for t in row["runs"])))
    if "skipped" in doc["paper"]:
        rows.append(("paper", f"skipped: {doc['paper']['skipped']}", *[""] * (len(TABLE_HEADER) - 2)))
    return common.markdown_table(TABLE_HEADER, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paper-repo", type=Path, default=None,
                    help="local checkout of the paper's code (VAE2Diffusion); without it the paper arm is skipped")
    ap.add_argument("--samples", type=int, default=8, help="demo member latents (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds (default 2)")
    ap.add_argument("--paper-k", type=int, default=None, help="k of the paper's log-volume (default: analyze's k)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, default=OUT_JSON, help=f"JSON path (default {OUT_JSON})")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run on the demo decoder; print the table; write the JSON. Returns the JSON document."""
    args = parse_args(argv)
    common.set_threads(args.threads)
    machine = common.machine_info()
    demo = common.load_demo_model()
    z, z_source = common.demo_latents(demo, args.samples)
    model = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    print(f"decoder geometry vs the paper's functions: {demo.source}, {z_source}, {args.threads} thread(s)")
    doc = run_paper_geometry(model, demo.decode, z, paper_repo=args.paper_repo, paper_k=args.paper_k,
                             rounds=args.rounds)
    doc = {"benchmark": "bench_paper_geometry", "created": common.now_iso(), "model": demo.source,
           "latents": z_source, "machine": machine, **doc, "load_average_at_end": _load()}
    print(table(doc))
    if doc["speedup_vs_paper"] is not None:
        print(f"analyze vs the paper's functions: {doc['speedup_vs_paper']:.1f}x; "
              f"vs the reference: {doc['speedup_vs_reference']:.1f}x")
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return doc


if __name__ == "__main__":
    main()
