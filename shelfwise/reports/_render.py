"""HTML (self-contained: inline CSS, charts as base64 PNG) and markdown renderings of a report."""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup

from shelfwise.reports._charts import DISPLAY_SCALE
from shelfwise.reports._model import GovernanceReport, Table, money, num, pct

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --main:#0f766e; --good:#15803d;
        --warn:#b45309; --bad:#be123c; --card:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans",
       "DejaVu Sans", sans-serif; }
code { font-family: "SFMono-Regular", Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace;
       font-size: .92em; }
.wrap { max-width: 1060px; margin: 0 auto; padding: 28px 28px 60px; }
header.top { border-bottom: 1px solid var(--line); padding-bottom: 14px; margin-bottom: 18px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--main);
           font-weight: 650; }
h1 { font-size: 27px; margin: 4px 0 6px; letter-spacing: -.01em; }
.meta { color: var(--muted); font-size: 13px; }
.lede { font-size: 19px; line-height: 1.45; margin: 16px 0 20px; max-width: 60em; }
.cards { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 12px; margin: 8px 0 24px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px 12px;
        border-top: 4px solid var(--line); }
.card.good { border-top-color: var(--good); } .card.warn { border-top-color: #f59e0b; }
.card.bad { border-top-color: var(--bad); } .card.neutral { border-top-color: var(--main); }
.card .label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 27px; font-weight: 680; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 12.5px; color: var(--muted); }
nav.toc { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 18px;
          margin-bottom: 26px; }
nav.toc h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
             margin: 0 0 6px; border: 0; padding: 0; }
nav.toc ol { margin: 0; padding-left: 20px; columns: 2; column-gap: 32px; }
nav.toc li { margin: 2px 0; }
a { color: var(--main); text-decoration: none; } a:hover { text-decoration: underline; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 20px 24px;
          margin: 0 0 22px; }
section h2 { font-size: 21px; margin: 0 0 6px; }
section .headline { font-size: 16.5px; margin: 0 0 14px; color: #111827; }
dl.facts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 8px 18px; margin: 0 0 16px; }
dl.facts div { border-left: 3px solid var(--line); padding-left: 10px; }
dl.facts dt { font-size: 12px; color: var(--muted); } dl.facts dd { margin: 0; font-weight: 600;
          font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 22px; align-items: flex-start; margin: 6px 0 14px; }
figure { margin: 0; max-width: 100%; } figure img { max-width: 100%; height: auto; display: block; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 10px 18px; }
.tables { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
table { border-collapse: collapse; flex: 1 1 100%; margin: 6px 0 18px; font-size: 13.5px; }
table.narrow { flex: 1 1 300px; max-width: 460px; }
caption { text-align: left; font-weight: 600; padding: 4px 0 8px; color: var(--ink); }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
     border-bottom: 2px solid var(--line); padding: 6px 8px; }
td { border-bottom: 1px solid var(--line); padding: 5px 8px; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.note { background: #fffbeb; border: 1px solid #fde68a; border-radius: 8px; padding: 8px 12px;
        margin: 10px 0 4px; font-size: 13.5px; }
.note strong { color: var(--warn); }
.note ul { margin: 4px 0 0; padding-left: 18px; }
p.text { margin: 6px 0 12px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 28px; }
@media (max-width: 760px) { .cards { grid-template-columns: repeat(2, 1fr); }
  dl.facts { grid-template-columns: 1fr 1fr; } .grid2 { grid-template-columns: 1fr; }
  nav.toc ol { columns: 1; } }
@media print { body { background: white; } section, .card, nav.toc { break-inside: avoid; } }
"""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Catalog governance report · {{ r.run_id }}</title>
<style>{{ css }}</style>
</head>
<body>
<div class="wrap">
<header class="top">
  <div class="eyebrow">shelfwise · data-governance report</div>
  <h1>Catalog governance report</h1>
  <div class="meta">Run <code>{{ r.run_id }}</code> · finished {{ finished }} · catalog {{ catalog }} ·
   model {{ r.summary.model_version }} · taxonomy {{ r.summary.taxonomy_version }}</div>
</header>
<p class="lede" id="headline">{{ r.headline }}</p>
<div class="cards">
{% for c in r.cards %}  <div class="card {{ c.tone }}"><div class="label">{{ c.label }}</div>
    <div class="value">{{ c.value }}</div><div class="sub">{{ c.sub }}</div></div>
{% endfor %}</div>
<nav class="toc"><h2>Contents</h2><ol>
{% for s in r.sections %}<li><a href="#{{ s.key }}">{{ s.title }}</a></li>{% endfor %}
<li><a href="#about">About this report</a></li>
</ol></nav>
{% for s in r.sections %}
<section id="{{ s.key }}">
  <h2>{{ loop.index }}. {{ s.title }}</h2>
  <p class="headline">{{ s.headline }}</p>
  {% if s.facts %}<dl class="facts">
    {% for k, v in s.facts %}<div><dt>{{ k }}</dt><dd>{{ v }}</dd></div>{% endfor %}</dl>{% endif %}
  {% if s.charts %}<div class="charts">
  {% for c in s.charts %}{% if c.png %}<figure><img alt="{{ c.alt }}" title="{{ c.title }}"
    data-chart="{{ c.title }}" width="{{ width(c.png) }}"
    src="data:image/png;base64,{{ b64(c.png) }}"></figure>{% endif %}{% endfor %}
  </div>{% endif %}
  {% for t in s.text %}<p class="text">{{ t }}</p>{% endfor %}
  {% if s.tables %}<div class="tables">{% for t in s.tables %}{{ table(t) }}{% endfor %}</div>{% endif %}
  {% if s.notes %}<div class="note"><strong>What is missing</strong>
    <ul>{% for n in s.notes %}<li>{{ n }}</li>{% endfor %}</ul></div>{% endif %}
</section>
{% endfor %}
<section id="about">
  <h2>About this report</h2>
  <p class="text">Precision is estimated from reviewers' answers on the audit queue (a random sample of
  auto-accepted products) with a 95% Wilson interval; a product counts as correct when the reviewer kept the
  suggested category. "Disagree" means the current and predicted categories lie on different branches of the
  taxonomy. Churn compares each product's category with the previous run; the distribution shift uses the
  Jensen-Shannon divergence (0 = same mix, 1 = disjoint) and the population stability index (below 0.1 is
  stable). Reviewer agreement is Cohen's kappa on items answered by two different reviewers. Figures from
  reviewers cover every answer recorded so far (precision: the audit answers on the current model); the
  volumes, catalog, taxonomy and drift figures are this run's.</p>
  {{ table(about) }}
  <p class="text">The tables behind this report are Parquet files next to it ({{ tables }});
  one row per run is kept in <code>{{ history }}</code>.</p>
</section>
<footer>Generated {{ r.generated_at }} by shelfwise.</footer>
</div>
</body>
</html>
"""


def _cell(v: Any) -> tuple[str, bool]:
    if v is None:
        return "–", False
    if isinstance(v, bool):
        return ("yes" if v else "no"), False
    if isinstance(v, float):
        return ("–" if math.isnan(v) else f"{v:,.1f}" if abs(v) >= 1 else f"{v:,.2f}"), True
    if isinstance(v, int):
        return f"{v:,}", True
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M"), False
    return str(v), False


def html_table(t: Any) -> Markup:
    frame: pl.DataFrame = t.frame
    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    rows = []
    for r in frame.iter_rows():
        cells = []
        for v in r:
            text, numeric = _cell(v)
            cells.append(
                f'<td class="n">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    longest = max((len(_cell(v)[0]) for r in frame.iter_rows() for v in r), default=0)
    cls = ' class="narrow"' if len(frame.columns) <= 2 and longest <= 36 else ""
    body = "".join(rows) or f'<tr><td colspan="{max(1, len(frame.columns))}">nothing to show</td></tr>'
    return Markup(
        f"<table{cls}><caption>{html.escape(t.caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _width(png: bytes) -> int:
    """Display width of a chart: its pixel width (from the PNG header) over the drawing scale."""
    return (
        round(int.from_bytes(png[16:20], "big") / DISPLAY_SCALE) if png[:8] == b"\x89PNG\r\n\x1a\n" else 460
    )


def render_html(r: GovernanceReport, *, tables: list[str], history: str) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    s = r.summary
    about_rows = [
        ("run", r.run_id),
        ("started / finished", f"{s.started_at} / {s.finished_at}"),
        ("catalog", s.catalog),
        ("model", f"{s.model_version} ({s.model_dir})"),
        ("taxonomy", s.taxonomy_version),
        ("previous run", str(s.previous_run_id or "none")),
        ("predictions", s.predictions_path),
    ]
    for k, v in s.thresholds.items():
        about_rows.append((f"setting: {k}", str(v)))
    about = Table(
        "Run details", pl.DataFrame({"": [a for a, _ in about_rows], "value": [b for _, b in about_rows]})
    )
    return env.from_string(TEMPLATE).render(
        r=r,
        css=Markup(CSS),
        b64=lambda b: base64.b64encode(b).decode("ascii"),
        table=html_table,
        about=about,
        width=_width,
        finished=s.finished_at,
        catalog=s.catalog,
        tables=", ".join(f"{t}.parquet" for t in tables),
        history=history,
    )


def render_markdown(r: GovernanceReport) -> str:
    f = r.figures
    rows = [
        ("products seen", num(f.get("seen"))),
        ("classified", num(f.get("classified"))),
        ("auto-accepted", f"{num(f.get('auto'))} ({pct(f.get('auto_rate'))})"),
        (
            "estimated precision (95% CI)",
            (
                f"{pct(f.get('precision'))} ({pct(f.get('precision_lo'))}–"
                f"{pct(f.get('precision_hi'))}), {num(f.get('audit_answers'))} audit answers"
            ),
        ),
        ("sent to review (low confidence / suspect)", f"{num(f.get('review'))} / {num(f.get('suspect'))}"),
        ("quarantined", num(f.get("quarantined"))),
        ("disagree with current category", pct(f.get("suspect_rate"), 1)),
        (
            "moved since previous run",
            "n/a"
            if f.get("churn_moved") is None
            else f"{num(f.get('churn_moved'))} ({pct(f.get('churn_rate'), 1)})",
        ),
        ("products on deprecated paths", num(f.get("deprecated_items"))),
        ("open review items", num(f.get("open_backlog"))),
        ("LLM calls / cost", f"{num(f.get('llm_calls'))} / {money(f.get('llm_cost_usd'))}"),
    ]
    lines = [
        f"# Catalog governance report: run `{r.run_id}`",
        "",
        f"**{r.headline}**",
        "",
        "| figure | value |",
        "|---|---:|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
    ]
    for s in r.sections:
        lines += [f"## {s.title}", "", s.headline, ""]
        if s.notes:
            lines += ["Missing: " + "; ".join(s.notes), ""]
    return "\n".join(lines).rstrip() + "\n"
