"""A LoRA trained on the members makes the leakage rise: on the tiny SD 1.x model with a LoRA that
memorises its members (tests/support/lora_memorised.py, trained at t in [1, 30]),
``analyze --lora-scale 0,1.0 --lora FILE`` writes one run per scale on the same samples and
``compare_runs(scale-0, scale-1)`` finds, under the standard and honest protocols, a positive AUROC
difference whose paired interval excludes 0 ("rises"), newly exposed images that are the ones
flagged at scale 1 and not at scale 0 (members only under standard, where no held-out image may
be flagged at 1% FPR), and per-run AUROCs equal to ``report --json`` of each run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ldminv_core.__main__ import main
from ldminv_core.evaluation.compare import compare_runs
from ldminv_core.runs import Run
from tests.support.lora_memorised import build_lora_memorised

pytestmark = pytest.mark.slow

SEED = 0
ATTACKS = ("loss", "sima")
N_BOOT = 1000


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    return build_lora_memorised(tmp_path_factory.mktemp("lora_memorised"), seed=SEED)


@pytest.fixture(scope="module")
def runs(memorised, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_runs") / "runs"
    assert main(["analyze", "--model", str(memorised.model), "--members", str(memorised.members),
                 "--heldout", str(memorised.heldout), "--out", str(out), "--attacks", ",".join(ATTACKS),
                 "--timesteps", "10:30:10", "--device", "cpu", "--threads", "1", "--batch-size", "16",
                 "--lora", str(memorised.lora), "--lora-scale", "0,1.0"]) == 0
    return out / "scale-0", out / "scale-1"


def test_the_lora_memorised_the_members(memorised):
    assert memorised.member_loss < 0.3 * memorised.member_loss_base
    assert memorised.member_loss < 0.3 * memorised.heldout_loss


def test_the_sweep_wrote_one_run_per_scale(runs):
    scales = [json.loads((r / "run.json").read_text())["lora"][0]["scale"] for r in runs]
    assert scales == [0.0, 1.0]


def _report_auroc(run, protocol: str, attack: str, capsys) -> float:
    capsys.readouterr()
    assert main(["report", str(run), "--json", "--attack", attack, "--protocol", protocol,
                 "--n-boot", "50"]) == 0
    return json.loads(capsys.readouterr().out)["attacks"][attack]["baseline"]["auroc"]


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_scale_one_against_scale_zero_shows_the_leakage_rise(runs, protocol, capsys):
    (cmp,) = compare_runs(list(runs), protocol=protocol, n_boot=N_BOOT)
    ids = np.asarray(Run.open(runs[0]).samples["sample_id"], dtype=np.int64)
    member_ids = set(ids[cmp.labels == 1].tolist())
    for attack in ATTACKS:
        m = next(x for x in cmp.metrics if x.attack == attack and x.arm == "baseline" and x.metric == "auroc")
        with capsys.disabled():
            print(f"\n{protocol} {attack}: scale 0 AUROC {m.a:.3f}, scale 1 AUROC {m.b:.3f}, "
                  f"difference {m.difference:+.3f} [{m.ci[0]:.3f}, {m.ci[1]:.3f}] {m.verdict}")
        assert m.a == _report_auroc(runs[0], protocol, attack, capsys)
        assert m.b == _report_auroc(runs[1], protocol, attack, capsys)
        assert m.difference == pytest.approx(m.b - m.a, abs=1e-12)
        assert m.difference > 0
        if attack == "loss":
            assert m.verdict == "rises" and m.ci[0] > 0, m

        e = next(x for x in cmp.exposure if x.attack == attack)
        assert e.newly_exposed.tolist() == sorted(ids[e.flagged_b & ~e.flagged_a].tolist())
        assert e.no_longer_exposed.tolist() == sorted(ids[e.flagged_a & ~e.flagged_b].tolist())
        newly = set(e.newly_exposed.tolist())
        assert newly
        if protocol == "standard":  # at most 1% of 12 held-out images: none may be flagged
            assert not (e.flagged_a | e.flagged_b)[cmp.labels == 0].any()
            assert newly <= member_ids
        else:  # transferred thresholds may flag a held-out image; the members dominate
            assert len(newly & member_ids) > len(newly - member_ids)
