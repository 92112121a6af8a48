"""A rank other than 0 of a run split across processes (:func:`_run_follower`): it waits for rank
0's set-up and encode stage, then fills its own batches of every remaining stage, making the
collectives in the order rank 0 makes them (:mod:`.distributed`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ldminv_core.models.loading import LoadedModel
from ldminv_core.runs import load_npy, planned_stages
from .batches import _Stage
from .distributed import DistContext, RankLedger
from .inputs import _check_model_lora, _check_timesteps_for_model, _load_plan_model, _rank_device
from .plan import _Plan
from .rows import _attack_rows, _geometry_rows, _open_existing, _stage_arrays


def _run_follower(plan: _Plan, ctx: DistContext, model: LoadedModel | None) -> Path:
    """A rank other than 0: load the model, wait for rank 0's set-up and encode stage, then fill
    this rank's batches of every remaining stage (collectives in the order rank 0 makes them)."""
    if model is None:
        model = _load_plan_model(plan, _rank_device(plan, ctx))
    _check_timesteps_for_model(plan, model)
    _check_model_lora(plan, model)
    ctx.agree()  # rank 0's set-up and encode stage are done
    data = json.loads((plan.out / "run.json").read_text(encoding="utf-8"))
    samples = pd.read_parquet(plan.out / "samples.parquet")
    n, lat = len(samples), tuple(model.latent_shape)
    captions = [None if (c is None or (isinstance(c, float) and math.isnan(c))) else str(c)
                for c in samples["caption"].tolist()]
    paths = samples["path"].tolist()
    z_all = load_npy(plan.out / "latents.npy", mmap_mode="r")
    ledger = RankLedger(plan.out, ctx, batch_size=plan.batch_size)
    decode = model.decoder_fn()
    for name in planned_stages(data)[1:]:
        if data.get("stages", {}).get(name):
            continue
        ctx.agree()  # rank 0 created the stage's arrays
        arrays = [_open_existing(plan.out, rel, shape, dt) for rel, shape, dt in _stage_arrays(name, plan, n, lat)]
        stage = _Stage(None, name, n, plan.batch_size, None, None, ledger=ledger,
                       prefix=int(data.get("progress", {}).get(name, 0)))
        methods = {}
        if name == "geometry":  # rank 0 recorded the paths before creating the arrays
            methods = json.loads((plan.out / "run.json").read_text(encoding="utf-8"))["geometry"]
        for start, stop in stage.batches(arrays):
            if name == "geometry":
                arrays[0][start:stop], arrays[1][start:stop] = _geometry_rows(
                    plan, model, decode, z_all, start, stop, methods, plan.out, paths)
            else:
                arrays[0][start:stop] = _attack_rows(name, plan, model, z_all, captions, start, stop, arrays[0].dtype,
                                                     str(plan.out / _stage_arrays(name, plan, n, lat)[0][0]), paths)
        del arrays
        ctx.agree()  # every rank computed its batches
        ctx.agree()  # rank 0 checked and recorded the stage
    return plan.out
