"""ldminv_app: the app layer of the ldminv dashboard, between the pages and ``ldminv_core``.

Session and caches (the session sits above the cache, which takes every choice as an argument):

- :mod:`ldminv_app.state`     session-state keys (active run, attack, timestep, protocol, manual mask)
  and the cached evaluation at the session's protocol and folds;
- :mod:`ldminv_app.cache`     Streamlit caches of runs, models, evaluations and derived arrays;
- :mod:`ldminv_app.warm`      the one low-priority background prefetcher;
- :mod:`ldminv_app.jobs`      background analyses with progress and cancellation;
- :mod:`ldminv_app.shutdown`  background threads stopped and waited for at interpreter exit.

The frame of every page:

- :mod:`ldminv_app.frame`     what every page script calls first (``page_frame``, ``require_run``);
- :mod:`ldminv_app.startup`   LDMINV_RUN or the demo at start-up;
- :mod:`ldminv_app.sidebar`   the active run, the live status of a partial run's analysis;
- :mod:`ldminv_app.widgets`   the shared attack, timestep and protocol selectors;
- :mod:`ldminv_app.banners`   partial-run banner, recorded warnings, missing geometry;
- :mod:`ldminv_app.notices`   error display (tracebacks folded) and one-shot notices;
- :mod:`ldminv_app.progress`  following a background analysis.

What the pages show:

- :mod:`ldminv_app.cards`     metric and finding cards, interval text;
- :mod:`ldminv_app.timestep_text` which t a page's numbers use, in words;
- :mod:`ldminv_app.blind`     the blind baseline (the files alone) as the pages show it;
- :mod:`ldminv_app.roc_view`  ROC curves from the evaluation layer, with the blind baseline's;
- :mod:`ldminv_app.findings_view`, :mod:`ldminv_app.masks_view`, :mod:`ldminv_app.distortion_view`
  the sections of the Findings, Masks & ROC and Distortion pages;
- :mod:`ldminv_app.run_folders` the runs folder (links, deletable runs, resume settings, cost rows);
- :mod:`ldminv_app.figures`   pure Plotly figure builders (arrays / data frames -> Figure), by kind;
- :mod:`ldminv_app.images`    thumbnails, display images, decoded tensors -> RGB;
- :mod:`ldminv_app.uploads`   uploaded images / zips -> an image folder;
- :mod:`ldminv_app.html_report` the HTML report in sections, its tables, the CSV files;
- :mod:`ldminv_app.tables`    the dashboard's tables (arms, rates, dimensions) and their columns;
- :mod:`ldminv_app.selections` typed coordinate queries, balanced samples of a selection;

``figures``, ``images``, ``jobs``, ``uploads``, ``html_report``, ``selections`` and ``shutdown`` never import
Streamlit, so reports and scripts can reuse them.
"""
