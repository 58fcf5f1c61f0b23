"""report.html (one self-contained file: figures inline as base64 PNG) and metrics.json.

The HTML carries a few lines of script that record, on the <body>, how many of its images
decoded (data-images-loaded="5/5") and the page height; bench/render_report.py reads that back from headless
Chromium, so "the report renders with its images" is checked, not eyeballed.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import jinja2

from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_bytes, atomic_write_json
from facebatch.scoring.metrics import QUANTILES
from facebatch.scoring.thresholds import fpr_key

TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>facebatch score: {{ m.source.run }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; white-space: normal; }
tr.primary td { font-weight: bold; background: #fffbe6; }
.meta { color: #666; font-size: 0.9em; } .note { color: #555; font-size: 0.9em; }
.figs { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.figs img { max-width: 100%; border: 1px solid #ddd; }
.direction { background: #eef5ff; padding: 0.5em 0.8em; border-left: 4px solid #4a7bd0; }
</style></head>
<body>
<h1>facebatch score</h1>
<p class="meta">run <code>{{ m.source.run }}</code> &middot; table <code>{{ m.source.table }}</code> &middot;
generator sha256 <code>{{ m.source.generator_sha256 or "unknown" }}</code> &middot; facebatch {{ m.facebatch }}</p>

<h2>Summary</h2>
<p class="direction">Task: <b>{{ m.task }}</b> detection; positive class = <b>{{ m.positive_class }}</b> ({{
m.task_source }}).
Primary score <b>{{ m.primary_score }}</b>: {{ m.scores[m.primary_score].direction }}.</p>
<table>
<tr><th class="l">rows in the run</th><td>{{ m.rows.total }}</td></tr>
<tr><th class="l">status ok (scored)</th><td>{{ m.rows.ok }}</td></tr>
<tr><th class="l">skipped: status error</th><td>{{ m.rows.skipped_error }}</td></tr>
{% if m.labels %}
<tr><th class="l">labels file</th><td>{{ m.labels.file }} (column <code>{{ m.labels.column }}</code>)</td></tr>
<tr><th class="l">ok rows with a label</th><td>{{ m.labels.labelled_ok_rows }} ({{ m.labels.positives }} {{
m.positive_class }}, {{ m.labels.negatives }} not)</td></tr>
<tr><th class="l">label rows matching no image</th><td>{{ m.labels.unknown_ids }}</td></tr>
{% endif %}
</table>

<h2>Scores compared</h2>
{% if m.labels %}
<table>
<tr><th class="l">score</th><th class="l">direction</th><th>n</th><th>AUROC [95% CI]</th><th>AP [95% CI]</th>
<th>TPR at FPR &le; {{ m.config.target_fpr }}</th><th>best F1</th></tr>
{% for name, s in m.scores.items() %}{% if s.auroc %}
<tr class="{{ 'primary' if name == m.primary_score else '' }}"><td class="l">{{ name }}</td><td class="l">{{ s.direction
}}</td>
<td>{{ s.labelled }}</td><td>{{ s.auroc.value | num3 }} {{ s.auroc.ci95 | ci }}</td>
<td>{{ s.average_precision.value | num3 }} {{ s.average_precision.ci95 | ci }}</td>
<td>{{ s.operating_points[fpr_key].tpr | num3 }}</td><td>{{ s.operating_points["best-f1"].f1 | num3 }}</td></tr>
{% else %}
<tr><td class="l">{{ name }}</td><td class="l" colspan="6">{{ s.note }}</td></tr>
{% endif %}{% endfor %}
</table>
<p class="note">AP chance level = prevalence = {{ m.scores[m.primary_score].average_precision.chance | num3 }}.
Intervals: percentile bootstrap, {{ m.bootstrap.n_resamples }} stratified resamples (each class resampled on its own),
seed {{ m.bootstrap.seed }}.</p>
{% else %}
<p class="note">No labels given: distributions only. Pass <code>--labels labels.csv</code> for AUROC, AP and
thresholds.</p>
{% endif %}

<h2>Distributions</h2>
<table>
<tr><th class="l">score</th><th>n</th><th>missing</th><th>mean</th>{% for q in quantile_keys %}<th>q{{ q }}</th>{%
endfor %}</tr>
{% for name, s in m.scores.items() %}
<tr class="{{ 'primary' if name == m.primary_score else '' }}"><td class="l">{{ name }}</td><td>{{ s.n }}</td><td>{{
s.n_missing }}</td>
<td>{{ s.distribution.mean | num }}</td>{% for q in quantile_keys %}<td>{{ s.distribution.quantiles[q] | num }}</td>{%
endfor %}</tr>
{% endfor %}
</table>
<div class="figs"><img alt="histogram of each score" src="{{ figs.histograms }}"></div>

{% if "roc" in figs %}
<h2>ROC and precision-recall</h2>
<div class="figs"><img alt="ROC curves" src="{{ figs.roc }}"><img alt="precision-recall curves"
src="{{ figs.pr }}"></div>
{% endif %}

{% if m.operating_point %}
<h2>Threshold</h2>
<p>{{ m.operating_point.name }}: <b>{{ m.operating_point.rule }}</b></p>
<table>
<tr><th></th><th>predicted not {{ m.positive_class }}</th><th>predicted {{ m.positive_class }}</th></tr>
<tr><th class="l">actually not {{ m.positive_class }}</th><td>{{ m.operating_point.confusion_matrix.tn }}</td><td>{{
m.operating_point.confusion_matrix.fp }}</td></tr>
<tr><th class="l">actually {{ m.positive_class }}</th><td>{{ m.operating_point.confusion_matrix.fn }}</td><td>{{
m.operating_point.confusion_matrix.tp }}</td></tr>
</table>
<p>TPR {{ m.operating_point.tpr | num3 }} &middot; FPR {{ m.operating_point.fpr | num3 }} &middot; precision {{
m.operating_point.precision | num3 }} &middot;
F1 {{ m.operating_point.f1 | num3 }} &middot; accuracy {{ m.operating_point.accuracy | num3 }}</p>
{% endif %}
{% if m.threshold %}
<p>Threshold applied: <b>{{ m.threshold.meaning }}</b> (rule {{ m.threshold.rule }}).
{% if m.flags %}Flags table: <code>{{ m.flags.path }}</code>: {{ m.flags.flagged }} of {{ m.flags.rows }} rows flagged
({{ m.flags.unscored }} unscored).{% endif %}</p>
{% endif %}

{% if "contact_sheet" in figs %}
<h2>Top {{ m.top_k | length }} by {{ m.primary_score }} (most {{ m.positive_class }}-looking first)</h2>
<div class="figs"><img alt="contact sheet: target, reconstruction, difference" src="{{ figs.contact_sheet }}"></div>
{% endif %}

<h2>Notes</h2>
<ul class="note">
{% for note in m.notes %}<li>{{ note }}</li>{% endfor %}
</ul>
<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  document.body.setAttribute("data-page-height", document.documentElement.scrollHeight);
});
</script>
</body></html>
"""


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _ci(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(num=_num, num3=lambda v: "-" if v is None else f"{v:.3f}", ci=_ci)
    return env


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(metrics: dict, figures: dict[str, bytes]) -> str:
    template = _environment().from_string(TEMPLATE)
    return template.render(
        m=metrics,
        figs={name: data_uri(png) for name, png in figures.items()},
        quantile_keys=[f"{q:g}" for q in QUANTILES],
        fpr_key=fpr_key(metrics["config"]["target_fpr"]),
    )


METRICS_JSON, REPORT_HTML, THRESHOLD_JSON = "metrics.json", "report.html", "threshold.json"
REPORT_FILES = (METRICS_JSON, REPORT_HTML, THRESHOLD_JSON)  # and one <figure>.png per figure


def report_paths(report_dir: Path, figures: dict[str, bytes]) -> list[Path]:
    """Every file a report with these figures writes (threshold.json only with --fit-threshold)."""
    report_dir = storage.location(report_dir)
    return [report_dir / f"{name}.png" for name in figures] + [report_dir / n for n in REPORT_FILES]


def write_report(report_dir: Path, metrics: dict, figures: dict[str, bytes]) -> list[Path]:
    """metrics.json, report.html and each figure as its own PNG; every write atomic."""
    report_dir = storage.location(report_dir)
    written = []
    for name, png in figures.items():
        path = report_dir / f"{name}.png"
        atomic_write_bytes(path, png)
        written.append(path)
    atomic_write_json(report_dir / METRICS_JSON, metrics)
    atomic_write_bytes(report_dir / REPORT_HTML, render_html(metrics, figures).encode("utf-8"))
    return written + [report_dir / METRICS_JSON, report_dir / REPORT_HTML]
