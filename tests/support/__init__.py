"""Shared helpers of the test suite (not tests themselves: pytest collects no ``test_*`` here).

Test modules import them as ``from support.<module> import ...``; ``tests/`` is on ``sys.path``
(``tests/conftest.py``). One module per kind of helper:

- ``chromium``: the system Chromium the browser tests drive, free ports, waiting and screenshots;
- ``fixture_runs``: the small finished run the export, browser and findings tests share, and the
  numpy oracle of the masked statistic;
- ``html_report``: a parser of the exported HTML report (tables, findings rows, embedded JSON);
- ``apptest``: the dashboard's pages, the tiny model of the page tests, and readers of the plotly
  figures an ``AppTest`` page shows;
- ``shift_runs``: the shifted / alike runs of the distribution-shift check;
- ``cost_estimates``: a fixed cost estimate for the model page's plan.
"""
