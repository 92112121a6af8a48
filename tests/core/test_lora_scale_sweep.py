"""``analyze --lora-scale 0,0.5,1.0`` (one run per scale on the same samples): the sweep's option
checks and the single-scale parse."""
from __future__ import annotations


import pytest

from ldminv_core.cli.parser import build_parser


def test_lora_scale_options(tmp_path):
    p = build_parser()
    assert p.parse_args(["analyze", "--lora-scale", "0.5"]).lora_scale == [0.5]
    assert p.parse_args(["analyze", "--lora-scale", "0,0.5,1.0"]).lora_scale == [(0.0, 0.5, 1.0)]
    base = ["analyze", "--model", "m", "--members", "a", "--heldout", "b"]
    for extra, message in (
        (["--out", "o", "--lora", "x", "--lora-scale", "0,1", "--lora-scale", "2"], "the only --lora-scale"),
        (["--out", "o", "--lora-scale", "0,1"], "exactly one --lora"),
        (["--lora", "x", "--lora-scale", "0,1"], "--out required"),
        (["--out", "o", "--lora", "x", "--lora-scale", "1,1.0"], "distinct scales"),
    ):
        from ldminv_core.cli.analyze_command import _scale_sweep
        from ldminv_core.errors import LdminvError

        with pytest.raises(LdminvError, match=message):
            _scale_sweep(p.parse_args(base + extra))
