"""ldminv_core.formatting: one formatter per kind of number, with the edge cases the surfaces that
used to format on their own (the text report, the HTML export, the dashboard) relied on."""
from __future__ import annotations

import math

from ldminv_core.formatting import (format_count, format_percent, format_rate, format_rate_ci, format_signed,
                                    timesteps_text)


def test_rates_have_four_decimals_and_a_dash_when_undefined():
    assert format_rate(0.81049) == "0.8105"
    assert format_rate(0.5, 3) == "0.500"
    assert format_rate(None) == format_rate(math.nan) == format_rate(math.inf) == "–"
    # the text report's table: a missing entry is "-", an undefined number still "–"
    assert format_rate(None, none="-") == "-" and format_rate(math.nan, none="-") == "–"


def test_intervals_of_rates_and_of_differences():
    assert format_rate_ci((0.77777, 0.84)) == "[0.7778, 0.8400]"
    assert format_rate_ci((0.1, 0.2), 3) == "[0.100, 0.200]"
    assert format_rate_ci((None, 0.2)) == format_rate_ci((math.nan, 0.2)) == format_rate_ci((0.1, math.inf)) == "–"
    assert format_rate_ci((0.01, 0.03), signed=True) == "[+0.0100, +0.0300]"
    assert format_rate_ci((-0.01, 0.03), 3, signed=True) == "[-0.010, +0.030]"
    assert format_rate_ci((math.nan, 0.03), signed=True) == format_rate_ci((None, 0.1), signed=True) == "–"
    # the dashboard's signed interval never hid an infinite bound
    assert format_rate_ci((-math.inf, 0.03), signed=True) == "[-inf, +0.0300]"


def test_signed_differences_percentages_counts_timesteps():
    assert format_signed(0.01234) == "+0.0123" and format_signed(-0.004) == "-0.0040"
    assert format_signed(math.nan) == format_signed(None) == "–"
    assert format_percent(40.0) == "40%" and format_percent(12.5, sep=" ") == "12.5 %"
    assert format_percent(None) == "–"
    assert format_count(4, 60, unit="members") == "4 of 60 members"
    assert format_count(4, 60) == "4 of 60" and format_count(4, 60, compact=True) == "4/60"
    assert timesteps_text([]) == "none"
    assert timesteps_text([0, 10, 20, 30]) == "0, 10, …, 30 (every 10; 4 timesteps)"
    assert timesteps_text([0, 5, 20]) == "0, 5, 20 (3 timesteps)"
    assert timesteps_text([7]) == "7 (1 timestep)"
