"""The run report: one self-contained HTML page per PipelineRun (and per consolidation source).

``python -m beam.report run RUN_DIR --workdir DIR`` writes ``RUN_DIR/report.html``: the stages as a
timeline, the validation result, the rejected rows by reason and a chart per KPI metric, drawn with
plotly (its JavaScript inlined, so the page opens offline). ``python -m beam.report consolidation
SPEC --workdir DIR`` draws an IngestionSource's cycles: rows merged and the watermark, over time.

- :mod:`beam.report.facts`: what a run left behind (status, stage results, expectations, rejects,
  KPI tables), read into plain values;
- :mod:`beam.report.charts`: those values as plotly figures;
- :mod:`beam.report.page`: the figures and tables as one HTML page;
- :mod:`beam.report.consolidation`: the same for the cycles of a consolidation.
"""

from __future__ import annotations

REPORT_FILE = "report.html"
