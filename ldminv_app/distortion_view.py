"""The Distortion page's views (its tabs) and its numbers by log-volume quartile, read from the cached
``Evaluation``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation

__all__ = ["VIEWS", "VIEW_KEY", "quartile_bar_values"]

#: The page's views below the finding, one tab each: only the open one is computed and drawn.
VIEWS = ("Distribution and quartiles", "Least and most distorted", "Sample viewer")
#: The session key of the open view (``st.tabs`` state: the open tab's label).
VIEW_KEY = "dist_view"


def quartile_bar_values(ev: Evaluation, timesteps: list[int],
                        t_index: int | None) -> tuple[Sequence[float], list | None, str]:
    """The AUROC of each log-volume quartile for the page's bar chart: (values (4,), their 95%
    intervals or None, where they are read). A maskable attack: at the sidebar's timestep
    ``timesteps[t_index]`` on all samples (descriptive, no interval); otherwise the attack's one
    score per sample with the quartiles' intervals."""
    if ev.maskable:  # the timestep in use (descriptive); the page's finding is at the protocol's t
        return ev.quartile_per_t()[:, t_index], None, f"at t = {timesteps[t_index]}, all samples"
    q_res = ev.quartiles()
    return [q.auroc for q in q_res], [q.auroc_ci for q in q_res], "one score per sample"
