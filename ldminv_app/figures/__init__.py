"""Plotly figures of the dashboard, as pure functions, one module per kind of figure.

Every function takes arrays / data frames and keyword options and returns a
``plotly.graph_objects.Figure``; none reads files, touches Streamlit or caches anything, so
the same builders serve the pages and any exported report. Conventions: members are
label 1, held-out label 0; arrays are numpy; a ``selected_t`` / ``current`` option draws a
marker line at the value in use.

- :mod:`.style`: template, colours, labels, the plotly toolbar config, layout helpers;
- :mod:`.distortion`: log-volume distribution, AUROC by log-volume quartile;
- :mod:`.heatmaps`: per-channel heatmaps, a value map over an image;
- :mod:`.roc`: ROC curves and their ticks;
- :mod:`.curves`: a metric against the drop percentage or the timestep;
- :mod:`.bars`: the attacks side by side, the blind baseline per feature group;
- :mod:`.scatter`: the dimension table and the latent map.
"""
from __future__ import annotations

from .bars import BLIND_VERDICT_COLORS, attack_overview, blind_group_aurocs
from .curves import drop_curves_with_bands, metric_vs_drop, metric_vs_timestep
from .distortion import log_volume_distribution, quartile_auroc_bars, quartile_auroc_vs_timestep
from .heatmaps import channel_heatmaps, image_with_heatmap
from .roc import log_ticks, rate_tick_text, roc_curves, thin_curve
from .scatter import dimension_scatter, latent_scatter
from .style import (COLUMN_LABELS, PLOTLY_CONFIG, SPLIT_COLORS, TEMPLATE, TOOLBAR_STRIP, VARIANT_COLORS,
                    coord_label, plotly_config, split_label)

__all__ = [
    "SPLIT_COLORS",
    "VARIANT_COLORS",
    "TEMPLATE",
    "log_volume_distribution",
    "quartile_auroc_bars",
    "quartile_auroc_vs_timestep",
    "channel_heatmaps",
    "image_with_heatmap",
    "roc_curves",
    "thin_curve",
    "log_ticks",
    "rate_tick_text",
    "metric_vs_drop",
    "drop_curves_with_bands",
    "attack_overview",
    "blind_group_aurocs",
    "metric_vs_timestep",
    "dimension_scatter",
    "latent_scatter",
    "coord_label",
    "split_label",
    "PLOTLY_CONFIG",
    "plotly_config",
]
