"""The protocols as objects (ldminv_core.evaluation.protocols): ``make_protocol`` and
``Protocol(name=...)`` give the subclass that owns the protocol's rules, with the same name,
settings, repr and equality as before; the evaluation starts no thread of its own."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from ldminv_core.errors import LdminvError, UnknownNameError
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.protocols import (HonestProtocol, PaperProtocol, Protocol, StandardProtocol,
                                              make_protocol)

from synthetic_runs import write_run


@pytest.mark.parametrize("name, cls", [("standard", StandardProtocol), ("paper", PaperProtocol),
                                       ("honest", HonestProtocol)])
def test_make_protocol_gives_the_subclass_of_that_name(name, cls):
    p = make_protocol(name, folds=3, seed=2)
    assert type(p) is cls and p.name == name and (p.folds, p.seed) == (3, 2)
    assert Protocol(name=name, folds=3, seed=2) == p and hash(Protocol(name=name, folds=3, seed=2)) == hash(p)
    assert repr(p) == f"Protocol(name={name!r}, folds=3, seed=2)"
    assert pickle.loads(pickle.dumps(p)) == p
    assert p.settings()["name"] == name and p.settings()["description"] == p.description


def test_default_protocol_is_standard():
    assert type(Protocol()) is StandardProtocol and Protocol() == make_protocol()


def test_the_rules_each_protocol_owns():
    s, p, h = make_protocol("standard"), make_protocol("paper"), make_protocol("honest", folds=4, seed=1)
    assert (s.positive_class, p.positive_class, h.positive_class) == ("member", "heldout", "member")
    assert (s.strict_fpr, p.strict_fpr, h.strict_fpr) == (False, True, False)
    assert (s.quartile_rule, p.quartile_rule, h.quartile_rule) == ("split", "percentile", "split")
    assert (s.grid_drop_rule, p.grid_drop_rule, h.grid_drop_rule) == ("round", "threshold", "round")
    assert (s.default_drop, p.default_drop, h.default_drop) == (40.0, 40.0, None)
    assert (s.random_count(100, 33.5), p.random_count(100, 33.5)) == (34, 33)  # round vs int
    assert h.transfers_thresholds and not s.transfers_thresholds and not p.transfers_thresholds
    labels = np.repeat([1, 0], 8)
    assert (s.assign_folds(labels) == 0).all() and sorted(set(h.assign_folds(labels))) == [0, 1, 2, 3]
    assert s.blind_fold_protocol() == make_protocol("honest") and h.blind_fold_protocol() is h
    assert h.settings()["folds"] == 4 and h.settings()["fold_seed"] == 1
    assert "4-fold" in h.description


def test_make_protocol_checks_its_arguments():
    with pytest.raises(UnknownNameError, match="protocol: expected one of standard, paper, honest; got 'x'"):
        make_protocol("x")
    with pytest.raises(LdminvError, match=r"folds: expected an integer >= 2, got 1 \(int\)"):
        make_protocol("honest", folds=1)
    with pytest.raises(LdminvError, match=r"seed: expected an integer >= 0, got -1 \(int\)"):
        make_protocol("honest", seed=-1)


def test_the_evaluation_starts_no_thread(tmp_path):
    rng = np.random.default_rng(0)
    n, shape = 40, (2, 2, 2)
    labels = np.repeat([1, 0], n // 2)
    run = write_run(tmp_path / "run", terms=rng.gamma(2.0, 1.0, size=(n, 2, *shape)).astype(np.float32),
                    influence=rng.normal(size=(n, *shape)).astype(np.float32), log_volume=rng.normal(size=n),
                    labels=labels, timesteps=[0, 10])
    before = set(threading.enumerate())
    ev = Evaluation(run, "sima", "standard", n_boot=0)
    ev.arms(40.0)
    ev.masked_per_t(41.0)
    assert set(threading.enumerate()) <= before
    assert not hasattr(ev, "prefetch") and not hasattr(ev, "prefetch_idle")
