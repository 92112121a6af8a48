"""ldminv_app: the app layer of the ldminv dashboard.

- :mod:`ldminv_app.figures`  pure Plotly figure builders (arrays / data frames -> Figure);
- :mod:`ldminv_app.images`   thumbnails, display images, decoded tensors -> RGB;
- :mod:`ldminv_app.jobs`     background analyses with progress and cancellation;
- :mod:`ldminv_app.uploads`  uploaded images / zips -> an image folder;
- :mod:`ldminv_app.export`   the HTML report and the per-sample CSV;
- :mod:`ldminv_app.selections` typed coordinate queries, balanced samples of a selection;
- :mod:`ldminv_app.shutdown` background threads stopped and waited for at interpreter exit;
- :mod:`ldminv_app.cache`    Streamlit caches of runs, models and derived arrays;
- :mod:`ldminv_app.state`    session-state keys (active run, attack, timestep, manual mask);
- :mod:`ldminv_app.ui`       shared page frame: start-up run, sidebar, errors, progress.

The first seven never import Streamlit, so reports and scripts can reuse them.
"""
