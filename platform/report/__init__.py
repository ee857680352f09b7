"""The comparison report of a sweep: leaderboard with labelled intervals, paired ranks, fairness, cost,
robustness, curves, heatmaps, paper vs ours (setting-aware) and a generated summary; as HTML (one
self-contained file), Markdown, CSV and JSON.

collect (store, MLflow, Optuna -> plain data) -> summarise (intervals, ranks, paper verdicts, sentences)
-> plots (curves, heatmaps) -> render (html, md, csv, json; write, publish).  Statistics live in
platform/stats.py, published numbers and their settings in platform/papers.py.
"""

from amlab.platform.report.collect import collect, compare, importances, importances_of, leaderboard
from amlab.platform.report.render import CSV_FIELDS, FORMATS, publish, render_csv, render_html, render_json, render_md, write
from amlab.platform.report.summarise import fmt, paper_rows, reached, summary, target_of

__all__ = [
    "CSV_FIELDS", "FORMATS", "collect", "compare", "fmt", "importances", "importances_of", "leaderboard", "paper_rows",
    "publish", "reached", "render_csv", "render_html", "render_json", "render_md", "summary", "target_of", "write",
]
