"""The export of a run's findings: a self-contained HTML report and CSV files.

- :mod:`.document`: :func:`~.document.build_html_report`, the HTML report as numbered sections;
- :mod:`.sections`: one module per kind of section (shift check, findings, settings, metrics,
  ROC, curves, distortion, report JSON);
- :mod:`.tables`: the tables the report and the pages share (arms, folds, blind, random seeds);
- :mod:`.csv_export`: the per-sample scores and the Dimensions table as CSV;
- :mod:`.filenames`: the names of the downloaded files;
- :mod:`.markup`: the HTML pieces (section, table, figure, escaping) and the style sheet;
- :mod:`.inputs`: the argument checks and the evaluation every export starts from.

Nothing is imported here: import the module you need (``ldminv_app.export`` re-exports the public
names for one release).
"""
