"""The sections of the HTML report, one module per kind: the shift check, the findings, the
settings, the metrics tables, the ROC curves, the curves against drop percentage and timestep, the
distortion figures and the report JSON. Each returns the HTML body of its section(s) from a
:class:`~ldminv_app.html_report.context.ReportContext`."""
