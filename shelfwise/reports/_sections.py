"""One function per report section: figures, headline sentence, charts, tables, and what is missing."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from typing import Any

import numpy as np
import polars as pl

from shelfwise.reports import _charts as charts
from shelfwise.reports._metrics import (
    cohen_kappa,
    expected_calibration_error,
    jensen_shannon,
    psi,
    reliability_bins,
    wilson_interval,
)
from shelfwise.reports._model import Chart, Section, Table, age, ci, money, num, pct, plural, share
from shelfwise.reports._sources import RunInputs

SEP = " > "
ANSWER_KINDS = ("accept", "choose")


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------
def _segments(path: str | None) -> list[str]:
    return [s.strip().casefold() for s in str(path).split(">")] if path else []


def same_branch(a: str | None, b: str | None) -> bool:
    """Equal, or one is an ancestor of the other (the routing's notion of 'agree')."""
    if not a or not b:
        return True
    pa, pb = _segments(a), _segments(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def top_expr(col: str) -> pl.Expr:
    """Vectorised :func:`top_level` (millions of rows stay in polars)."""
    return (pl.col(col).str.split(">").list.first().str.strip_chars().fill_null("(none)")
            .replace("", "(none)"))


def top_counter(frame: pl.DataFrame, col: str = "category_path") -> Counter[str]:
    if frame.is_empty():
        return Counter()
    vc = frame.select(top_expr(col).alias("top")).group_by("top").agg(pl.len().alias("n"))
    return Counter(dict(zip(vc["top"].to_list(), vc["n"].to_list(), strict=True)))


def top_level(path: str | None) -> str:
    return str(path).split(">")[0].strip() if path else "(none)"


def answers(decisions: pl.DataFrame) -> pl.DataFrame:
    """Final reviewer decisions that name a category (accept / choose), one per review item, with
    ``chosen_id``, ``chosen_path`` and ``model_correct`` (the reviewer kept the shown suggestion).

    A first opinion still waiting for a second reviewer is not an answer yet."""
    if decisions.is_empty():
        return decisions.with_columns(
            pl.lit(None, pl.String).alias("chosen_id"), pl.lit(None, pl.String).alias("chosen_path"),
            pl.lit(None, pl.Boolean).alias("model_correct"), pl.lit(None, pl.String).alias("item_key"),
        )
    d = _with_choice(decisions.filter(pl.col("kind").is_in(ANSWER_KINDS) & pl.col("final").fill_null(False)))
    d = d.sort(["item_key", "final", "decided_at"], nulls_last=False)
    return d.group_by("item_key", maintain_order=True).last()


def _with_choice(d: pl.DataFrame) -> pl.DataFrame:
    accept = pl.col("kind") == "accept"
    chosen_id = pl.when(accept).then(pl.coalesce("category_id", "shown_category_id")).otherwise(pl.col("category_id"))
    chosen_path = pl.when(accept).then(pl.coalesce("category_path", "shown_category_path")).otherwise(
        pl.col("category_path"))
    d = d.with_columns(
        chosen_id.alias("chosen_id"), chosen_path.alias("chosen_path"),
        pl.coalesce(pl.col("item_id").cast(pl.String), pl.col("sku_id") + "|" + pl.col("run_id").fill_null(""))
        .alias("item_key"),
        pl.col("final").fill_null(False),
    )
    same_id = pl.col("chosen_id") == pl.col("shown_category_id")
    same_path = pl.col("chosen_path") == pl.col("shown_category_path")
    correct = (
        pl.when(pl.col("shown_category_id").is_not_null() & pl.col("chosen_id").is_not_null()).then(same_id)
        .otherwise(same_path)
    )
    return d.with_columns(correct.fill_null(False).alias("model_correct"))


def _pairs(frame: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    return frame.group_by(a, b).agg(pl.len().alias("n"))


def _fmt_frame(frame: pl.DataFrame, *, pct_cols: tuple[str, ...] = (), path_cols: tuple[str, ...] = ()) -> pl.DataFrame:
    """A small display copy: percentages as text, long paths shortened."""
    out = frame
    for c in pct_cols:
        if c in out.columns:
            out = out.with_columns(pl.Series(c, [pct(v) for v in out[c].to_list()], dtype=pl.String))
    for c in path_cols:
        if c in out.columns:
            out = out.with_columns(pl.Series(c, [charts.short_path(v, keep=3, width=70) for v in out[c].to_list()],
                                             dtype=pl.String))
    return out


# --------------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------------
def volumes(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame]) -> Section:
    s = inp.summary
    c = s.get("counts") or {}
    q = c.get("queued") or {}
    llm = s.get("llm") or {}
    seen, classified, quarantined = int(c.get("seen", 0)), int(c.get("classified", 0)), int(c.get("quarantined", 0))
    auto, review, suspect = int(c.get("auto", 0)), int(c.get("review", 0)), int(c.get("suspect", 0))
    new, changed, unchanged = int(c.get("new", 0)), int(c.get("changed", 0)), int(c.get("unchanged", 0))
    sec = Section("volumes", "Volumes", "")
    sec.notes += inp.missing.get("volumes", [])
    gone = None
    st = inp.catalog_state
    if not st.is_empty() and "last_seen_run" in st.columns:
        latest = st.get_column("last_seen_run").max()
        if latest == inp.run_id:
            gone = int(st.filter(pl.col("last_seen_run") != inp.run_id).height)
    figs.update(seen=seen, new=new, changed=changed, unchanged=unchanged, classified=classified,
                quarantined=quarantined, auto=auto, review=review, suspect=suspect,
                human_locked=int(c.get("human_locked", 0)), auto_rate=share(auto, classified),
                queued_total=int(sum(int(v or 0) for v in q.values())),
                llm_calls=int(llm.get("calls", 0) or 0), llm_tokens=int((llm.get("tokens_in", 0) or 0) +
                                                                     (llm.get("tokens_out", 0) or 0)),
                llm_cost_usd=float(llm.get("cost_usd", 0.0) or 0.0), gone=gone)
    sec.headline = (
        f"{plural(seen, 'product')} seen: {num(classified)} classified and {num(quarantined)} quarantined; "
        f"{num(new)} new and {num(changed)} changed since the last run. "
        f"{num(auto)} ({pct(share(auto, classified))}) were auto-accepted, "
        f"{num(review + suspect)} need a human look."
    )
    if llm.get("enabled") and (llm.get("gated") or llm.get("calls")):
        sec.headline += (f" The LLM looked at {plural(int(llm.get('gated', 0) or 0), 'uncertain product')} "
                         f"({plural(int(llm.get('calls', 0) or 0), 'call')}, "
                         f"{num((llm.get('tokens_in', 0) or 0) + (llm.get('tokens_out', 0) or 0))} tokens, "
                         f"{money(llm.get('cost_usd'))}).")
    sec.facts = [
        ("seen", num(seen)), ("new", num(new)), ("changed", num(changed)), ("unchanged", num(unchanged)),
        ("classified", num(classified)), ("quarantined", num(quarantined)), ("auto-accepted", num(auto)),
        ("low confidence (review)", num(review)), ("suspect (current category disagrees)", num(suspect)),
        ("kept human decisions", num(c.get("human_locked", 0))),
    ]
    if gone is not None:
        sec.facts.append(("no longer in the catalog", num(gone)))
    labels = ["auto-accepted", "review: low confidence", "review: suspect", "quarantined (bad rows)"]
    values = [auto, review, suspect, quarantined]
    colors = [charts.PALETTE["main"], charts.PALETTE["accent"], charts.PALETTE["bad"], charts.PALETTE["second"]]
    if seen:
        sec.charts.append(Chart("Where tonight's products went", charts.barh(
            labels, values, title="Where tonight's products went", xlabel="products", colors=colors),
            "bar chart of products auto-accepted, sent to review, flagged suspect and quarantined"))
    queue_rows = [{"queue": k, "items sent": int(q.get(k, 0) or 0)} for k in
                  ("low_confidence", "suspect", "llm_failed", "audit")]
    queue_df = pl.DataFrame(queue_rows, schema={"queue": pl.String, "items sent": pl.Int64})
    if sum(queue_df["items sent"]):
        sec.charts.append(Chart("Review queues", charts.barh(
            [q.replace("_", " ") for q in queue_df["queue"]], queue_df["items sent"].to_list(),
            title="Items sent to each review queue", xlabel="items",
            colors=[charts.PALETTE["accent"], charts.PALETTE["bad"], charts.PALETTE["second"], charts.PALETTE["main"]]),
            "bar chart of items sent to each review queue"))
    sec.tables.append(Table("Items sent to each review queue tonight (within the nightly capacity)", queue_df))

    # quarantine reasons: from the JSONL when present (field + example fix), else from the summary counts
    qf = inp.quarantine.with_columns(
        pl.when(pl.col("severity") == "warning").then(pl.lit("kept, field nulled")).otherwise(pl.lit("row dropped"))
        .alias("outcome"))
    schema = {"outcome": pl.String, "reason": pl.String, "field": pl.String, "count": pl.Int64, "how to fix": pl.String}
    if not qf.is_empty():
        reasons = (qf.group_by("outcome", "reason", "field").agg(
            pl.len().cast(pl.Int64).alias("count"), pl.col("fix").drop_nulls().first().alias("how to fix"))
            .sort(["outcome", "count", "reason"], descending=[True, True, False]))
    else:
        r = c.get("quarantine_reasons") or {}
        reasons = pl.DataFrame({"outcome": ["row dropped"] * len(r), "reason": list(r), "field": [None] * len(r),
                                "count": [int(v) for v in r.values()], "how to fix": [None] * len(r)},
                               schema=schema).sort("count", descending=True)
    tables["quarantine_reasons"] = reasons
    dropped = reasons.filter(pl.col("outcome") == "row dropped")
    if quarantined and dropped.is_empty():
        sec.notes.append(f"{num(quarantined)} rows were quarantined, but no reasons were recorded")
    if not dropped.is_empty():
        by_reason = dropped.group_by("reason").agg(pl.col("count").sum()).sort(["count", "reason"],
                                                                              descending=[True, False]).head(12)
        sec.charts.append(Chart("Why rows were quarantined", charts.barh(
            [str(x).replace("_", " ") for x in by_reason["reason"]], by_reason["count"].to_list(),
            title="Why rows were quarantined", xlabel="rows", colors=charts.PALETTE["second"]),
            "bar chart of quarantine reasons"))
    if not reasons.is_empty():
        sec.tables.append(Table("Quarantined rows and field warnings by reason, with the fix", reasons.head(20)))
    qpath = s.get("quarantine_path")
    if quarantined and qpath:
        sec.text.append(f"The quarantined rows, with the row number and the fix for each, are in {qpath}.")

    # LLM
    llm_rows = [
        ("LLM step", "on" if llm.get("enabled") else "off"),
        ("items sent to the LLM (gated)", num(llm.get("gated", 0))),
        ("LLM calls", num(llm.get("calls", 0))), ("answers from the LLM cache", num(llm.get("cache_hits", 0))),
        ("tokens in / out", f"{num(llm.get('tokens_in', 0))} / {num(llm.get('tokens_out', 0))}"),
        ("cost", money(llm.get("cost_usd"))),
        ("failed / skipped", f"{num(llm.get('failed', 0))} / {num(llm.get('skipped', 0))}"),
    ]
    statuses = llm.get("statuses") or {}
    if statuses:
        llm_rows.append(("outcomes", ", ".join(f"{k}: {num(v)}" for k, v in sorted(statuses.items()))))
    if llm.get("latency_ms_p50") is not None:
        llm_rows.append(("latency p50 / p95", (f"{float(llm['latency_ms_p50']):,.0f} ms / "
                                               f"{float(llm.get('latency_ms_p95') or 0):,.0f} ms")))
    sec.tables.append(Table("LLM arbitration", pl.DataFrame({"": [a for a, _ in llm_rows],
                                                            "value": [b for _, b in llm_rows]})))
    log_frame = inp.llm_log
    if not log_frame.is_empty() and "status" in log_frame.columns:
        aggs = [pl.len().alias("answers")]
        if "confidence" in log_frame.columns:
            aggs.append(pl.col("confidence").mean().round(2).alias("mean confidence"))
        if "latency_ms" in log_frame.columns:
            aggs.append(pl.col("latency_ms").median().round(0).alias("median latency ms"))
        if "cost_usd" in log_frame.columns:
            aggs.append(pl.col("cost_usd").sum().round(4).alias("cost USD"))
        by_status = log_frame.group_by("status").agg(aggs).sort("answers", descending=True)
        tables["llm_outcomes"] = by_status
        sec.tables.append(Table("LLM answers during this run, by outcome (from the LLM decision log)", by_status))
    if llm.get("note"):
        sec.text.append(str(llm["note"]))
    vol_rows = {"seen": seen, "new": new, "changed": changed, "unchanged": unchanged, "classified": classified,
                "quarantined": quarantined, "auto": auto, "review": review, "suspect": suspect,
                "human_locked": int(c.get("human_locked", 0)),
                **{f"queued_{k}": int(q.get(k, 0) or 0) for k in ("low_confidence", "suspect", "llm_failed", "audit")},
                "llm_gated": int(llm.get("gated", 0) or 0), "llm_calls": int(llm.get("calls", 0) or 0),
                "llm_cache_hits": int(llm.get("cache_hits", 0) or 0),
                "llm_tokens_in": int(llm.get("tokens_in", 0) or 0), "llm_tokens_out": int(llm.get("tokens_out", 0) or 0),
                "embeddings_computed": int((s.get("embedding") or {}).get("misses", 0) or 0),
                "embeddings_cached": int((s.get("embedding") or {}).get("hits", 0) or 0)}
    tables["volumes"] = pl.DataFrame({"run_id": [inp.run_id] * len(vol_rows), "metric": list(vol_rows),
                                      "value": [float(v) for v in vol_rows.values()]})
    tables["volumes"] = pl.concat([tables["volumes"], pl.DataFrame(
        {"run_id": [inp.run_id], "metric": ["llm_cost_usd"], "value": [float(llm.get("cost_usd", 0.0) or 0.0)]})])
    tables["queues"] = queue_df
    return sec


# --------------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------------
def quality(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], *, target: float) -> Section:
    sec = Section("quality", "Quality", "")
    sec.notes += inp.missing.get("queue", [])
    ans = answers(inp.decisions)
    model_version = inp.summary.get("model_version")
    audit = ans.filter(pl.col("queue") == "audit")
    scope = "all audit answers"
    if model_version and not audit.is_empty():
        same_model = audit.filter(pl.col("model_version") == model_version)
        if not same_model.is_empty():
            audit, scope = same_model, f"audit answers on model {model_version}"
        else:
            scope = f"all audit answers (none yet on the current model {model_version})"
    n_audit = audit.height
    ok_audit = int(audit["model_correct"].sum()) if n_audit else 0
    prec = share(ok_audit, n_audit)
    lo, hi = wilson_interval(ok_audit, n_audit)
    classified = figs.get("classified", 0)
    auto_rate = figs.get("auto_rate")
    figs.update(precision=prec, precision_lo=None if n_audit == 0 else lo, precision_hi=None if n_audit == 0 else hi,
                audit_answers=n_audit, target_precision=target)
    # agreement on every answer (all queues)
    n_ans = ans.height
    agree = int(ans["model_correct"].sum()) if n_ans else 0
    figs.update(reviewer_answers=n_ans, model_agreement=share(agree, n_ans))
    if n_audit:
        verdict = ("on target" if lo >= target else "below target" if hi < target else
                   "not yet provably on target (the interval includes the target)")
        sec.headline = (
            f"Auto-accepted items are an estimated {pct(prec)} correct (95% CI {ci(lo, hi)}, "
            f"{plural(n_audit, 'audit answer')}), against a target of {pct(target)}: {verdict}. "
            f"Coverage at that target: {pct(auto_rate)} of classified products were auto-accepted."
        )
    else:
        sec.headline = (
            f"No audit answers yet, so the precision of auto-accepted items is not estimated; "
            f"coverage at the {pct(target)} precision target: {pct(auto_rate)} of "
            f"{num(classified)} classified products were auto-accepted."
        )
        sec.notes.append("no audit answers yet: reviewers have not checked any sampled auto-accepted item "
                         "(queue `audit`)")
    sec.facts = [
        ("estimated precision of auto-accepted", pct(prec, 1)), ("95% confidence interval", ci(lo, hi)),
        ("based on", f"{plural(n_audit, 'audit answer')} ({scope})" if n_audit else "no audit answers yet"),
        ("precision target", pct(target)), ("coverage (auto-accepted share)", pct(auto_rate, 1)),
        ("model agrees with reviewers",
         f"{pct(share(agree, n_ans))} of {plural(n_ans, 'answer')}" if n_ans else "no reviewer answers yet"),
    ]
    _what_if(sec, audit, inp.predictions, tables, figs, target=target)
    # agreement by queue
    if n_ans:
        byq = (ans.group_by("queue").agg(pl.len().alias("answers"), pl.col("model_correct").sum().alias("agree"))
               .sort("answers", descending=True))
        rows = []
        for r in byq.iter_rows(named=True):
            l2, h2 = wilson_interval(int(r["agree"]), int(r["answers"]))
            rows.append({"queue": r["queue"], "answers": int(r["answers"]), "reviewer kept the suggestion": int(r["agree"]),
                         "agreement": r["agree"] / r["answers"], "95% CI": ci(l2, h2)})
        agree_df = pl.DataFrame(rows)
        tables["agreement"] = agree_df
        sec.tables.append(Table("Agreement between the model's suggestion and the reviewers, by queue",
                                _fmt_frame(agree_df, pct_cols=("agreement",))))
    else:
        sec.notes.append("no reviewer answers yet: agreement and calibration need accepted or corrected items")
    # calibration
    cal = ans.filter(pl.col("shown_confidence").is_not_null())
    if cal.height >= 5:
        bins = reliability_bins(cal["shown_confidence"].to_list(), cal["model_correct"].to_list(), bins=10)
        ece = expected_calibration_error(bins)
        figs["calibration_error"] = ece
        tables["calibration"] = pl.DataFrame(bins)
        sec.charts.append(Chart("Calibration", charts.reliability(
            bins, title="Does confidence match reviewer-confirmed correctness?"),
            "reliability diagram of model confidence against the share of answers confirming the suggestion"))
        sec.text.append(
            f"Calibration over {plural(cal.height, 'answer')}: confidence is off by {pct(ece, 1)} on average "
            "(expected calibration error). Review queues hold mostly uncertain items, so low confidences "
            "are over-represented here.")
    elif n_ans:
        sec.notes.append(f"only {plural(cal.height, 'answer')} with a shown confidence: the reliability "
                         "diagram needs at least 5")
    # coverage by top-level branch
    pred = inp.predictions
    if not pred.is_empty():
        tl = (pred.with_columns(top_expr("category_path").alias("top"))
              .group_by("top").agg(pl.len().alias("classified"), (pl.col("route") == "auto").sum().alias("auto"))
              .with_columns((pl.col("auto") / pl.col("classified")).alias("coverage"))
              .sort("classified", descending=True))
        tables["coverage_by_branch"] = tl
        shown = tl.head(12)
        sec.charts.append(Chart("Coverage by branch", charts.barh(
            [charts.short_path(x, keep=1, width=38) for x in shown["top"]], shown["coverage"].to_list(),
            title="Share auto-accepted, by predicted top-level category", kind="pct",
            ref=auto_rate, ref_label=f"all: {pct(auto_rate)}"),
            "bar chart of the share of auto-accepted products per top-level category"))
    return sec


def what_if_table(audit: pl.DataFrame, predictions: pl.DataFrame, *, steps: int = 6) -> pl.DataFrame:
    """Raising the auto-accept bar, estimated from audit answers (a random sample of auto-accepted items).

    For minimum confidences ``t`` (the audit answers' own confidence quantiles), an extra rule "auto-accept
    only when confidence >= t" would keep the audited items with confidence >= t: their share confirmed by
    the reviewers estimates the precision (Wilson 95% interval), without bias because the audit sample is
    random. Coverage is the share of tonight's classified products that would still be auto-accepted.
    The first row (lowest ``t``) is tonight's policy. Lowering the bar cannot be estimated this way
    (nothing below the threshold is audited).
    """
    conf = audit.get_column("shown_confidence").cast(pl.Float64).to_numpy()
    ok = audit.get_column("model_correct").cast(pl.Boolean).to_numpy()
    if "confidence" in predictions.columns and "route" in predictions.columns:
        auto_conf = predictions.filter(pl.col("route") == "auto").get_column("confidence").cast(pl.Float64).to_numpy()
    else:
        auto_conf = conf[:0]
    classified = max(predictions.height, 1)
    grid = sorted({float(x) for x in np.quantile(conf, np.linspace(0, 0.9, steps))}) if len(conf) else []
    rows = []
    for t in grid:
        keep = conf >= t
        n = int(keep.sum())
        if n == 0:
            continue
        good = int(ok[keep].sum())
        lo, hi = wilson_interval(good, n)
        rows.append({"min confidence": t, "audit answers": n, "estimated precision": good / n,
                     "95% CI": ci(lo, hi), "_lo": lo,
                     "coverage": float((auto_conf >= t).sum()) / classified})
    return pl.DataFrame(rows)


def _what_if(sec: Section, audit: pl.DataFrame, predictions: pl.DataFrame, tables: dict[str, pl.DataFrame],
             figs: dict[str, Any], *, target: float) -> None:
    audit = audit.filter(pl.col("shown_confidence").is_not_null())
    if audit.height < 20:
        if audit.height:
            sec.notes.append(f"only {plural(audit.height, 'audit answer')}: the what-if table on raising the "
                             "auto-accept bar needs at least 20")
        return
    table = what_if_table(audit, predictions)
    if table.is_empty():
        return
    shown = table.drop("_lo")
    tables["what_if_threshold"] = shown
    sec.tables.append(Table("What if auto-accept required a higher confidence? (estimated from audit answers)",
                            _fmt_frame(shown.with_columns(pl.col("min confidence").round(3)),
                                       pct_cols=("estimated precision", "coverage"))))
    reach = table.filter(pl.col("_lo") >= target)
    if reach.is_empty():
        sec.text.append(f"None of the confidence bars in the what-if table is proven to reach {pct(target)} "
                        "precision yet (the lower end of every interval is below it): more audit answers, "
                        "or retraining with the reviewers' labels, are needed.")
    else:
        best = reach.row(0, named=True)
        figs["what_if_min_confidence"] = best["min confidence"]
        figs["what_if_coverage"] = best["coverage"]
        sec.text.append(f"Requiring confidence >= {best['min confidence']:.2f} is the lowest bar whose precision is "
                        f"proven above {pct(target)} (95% CI {best['95% CI']}); it would auto-accept "
                        f"{pct(best['coverage'])} of tonight's products.")


# --------------------------------------------------------------------------------------------------
# Catalog health
# --------------------------------------------------------------------------------------------------
def catalog_health(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame]) -> Section:
    sec = Section("catalog", "Catalog health", "")
    pred = inp.predictions
    with_cur = pred.filter(pl.col("current_category_path").is_not_null() & (pl.col("current_category_path") != ""))
    pairs = _pairs(with_cur, "current_category_path", "category_path")
    agree_map = {(a, b): same_branch(b, a) for a, b in zip(pairs["current_category_path"], pairs["category_path"],
                                                           strict=True)}
    pairs = pairs.with_columns(pl.Series("agree", [agree_map[(a, b)] for a, b in zip(
        pairs["current_category_path"], pairs["category_path"], strict=True)], dtype=pl.Boolean))
    disagree = pairs.filter(~pl.col("agree"))
    n_cur = with_cur.height
    n_dis = int(disagree["n"].sum()) if not disagree.is_empty() else 0
    n_suspect = int((pred["route"] == "suspect").sum()) if not pred.is_empty() else 0
    uncategorized = pred.height - n_cur
    unc_auto = int(pred.filter(pl.col("current_category_path").is_null() | (pl.col("current_category_path") == ""))
                   .select((pl.col("route") == "auto").sum()).item()) if uncategorized else 0
    # reviewers on suspects: did they confirm the current category was wrong?
    ans = answers(inp.decisions)
    sus = ans.filter((pl.col("queue") == "suspect") & pl.col("current_category_path").is_not_null())
    confirmed = sum(not same_branch(ch, cur) for ch, cur in zip(sus["chosen_path"], sus["current_category_path"],
                                                                 strict=True))
    c_lo, c_hi = wilson_interval(confirmed, sus.height)
    figs.update(suspect_rate=share(n_dis, n_cur), suspect_confident=n_suspect,
                confirmed_misfile_rate=share(confirmed, sus.height), suspect_answers=sus.height,
                uncategorized=uncategorized)
    head = (f"{pct(share(n_dis, n_cur), 1)} of the {num(n_cur)} products that have a category disagree with "
            f"shelfwise ({num(n_suspect)} confidently enough to be flagged as suspect). ")
    if sus.height:
        head += (f"Reviewers confirmed {pct(share(confirmed, sus.height))} of the suspects they checked "
                 f"({num(confirmed)} of {num(sus.height)}; 95% CI {ci(c_lo, c_hi)}).")
    else:
        head += "No reviewer has checked a suspect yet, so the rate is not confirmed."
        sec.notes.append("no answers yet on the suspect queue: the misclassification rate is not confirmed")
    sec.headline = head
    unclassified_waiting = int(pred.filter(pl.col("route") != "auto").height) if not pred.is_empty() else 0
    top_only = int((pred["predicted_depth"] == 1).sum()) if not pred.is_empty() else 0
    quarantined = int(figs.get("quarantined", 0))
    figs["unclassified"] = unclassified_waiting + quarantined
    sec.facts = [
        ("products with a current category", num(n_cur)),
        ("disagree with shelfwise", f"{num(n_dis)} ({pct(share(n_dis, n_cur), 1)})"),
        ("flagged suspect (confident disagreement)", num(n_suspect)),
        ("suspects confirmed by reviewers", f"{num(confirmed)} of {num(sus.height)}"),
        ("uncategorized in the catalog (no current category)", f"{num(uncategorized)} ({num(unc_auto)} now auto-classified)"),
        ("without an accepted category tonight", (f"{num(unclassified_waiting + quarantined)} ({num(unclassified_waiting)} "
                                                  f"awaiting review, {num(quarantined)} quarantined)")),
        ("classified only to the top level", num(top_only)),
    ]
    # categories with the most corrections (reviewer moved the product off its current category)
    corr = ans.filter(pl.col("current_category_path").is_not_null() & pl.col("chosen_path").is_not_null())
    corr = corr.filter(pl.Series([not same_branch(ch, cur) for ch, cur in zip(
        corr["chosen_path"], corr["current_category_path"], strict=True)], dtype=pl.Boolean))
    if not corr.is_empty():
        top = (corr.group_by("current_category_path").agg(
            pl.len().alias("corrections"), pl.col("chosen_path").mode().first().alias("most often moved to"))
            .sort(["corrections", "current_category_path"], descending=[True, False]))
        tables["corrections"] = top
        shown = top.head(10)
        sec.charts.append(Chart("Categories with the most corrections", charts.barh(
            [charts.short_path(x) for x in shown["current_category_path"]], shown["corrections"].to_list(),
            title="Current categories reviewers corrected most", xlabel="products moved by a reviewer",
            colors=charts.PALETTE["bad"]), "bar chart of current categories with most reviewer corrections"))
        sec.tables.append(Table("Categories with the most reviewer corrections",
                                _fmt_frame(top.head(10), path_cols=("current_category_path", "most often moved to"))))
    else:
        sec.notes.append("no reviewer corrections yet (no answer moved a product off its current category)")
    # confusion hot-spots
    hot = (disagree.sort(["n", "current_category_path"], descending=[True, False])
           .select(pl.lit("current_vs_predicted").alias("kind"), pl.col("current_category_path").alias("from_path"),
                   pl.col("category_path").alias("to_path"), pl.col("n").alias("count")))
    rev = ans.filter(~pl.col("model_correct") & pl.col("chosen_path").is_not_null())
    rev_pairs = (_pairs(rev, "shown_category_path", "chosen_path").sort(["n", "shown_category_path"], descending=[True, False])
                 .select(pl.lit("suggestion_vs_reviewer").alias("kind"), pl.col("shown_category_path").alias("from_path"),
                         pl.col("chosen_path").alias("to_path"), pl.col("n").alias("count")))
    tables["confusion"] = pl.concat([hot, rev_pairs], how="vertical_relaxed")
    if not hot.is_empty():
        shown = hot.head(10)
        sec.charts.append(Chart("Confusion hot-spots", charts.barh(
            [charts.pair_labels(a, b) for a, b in zip(shown["from_path"], shown["to_path"], strict=True)], shown["count"].to_list(),
            title="Where the catalog and shelfwise disagree most (current → predicted)", xlabel="products",
            colors=charts.PALETTE["accent"]), "bar chart of the most frequent current-to-predicted category pairs"))
        sec.tables.append(Table("Confusion hot-spots: current category vs shelfwise's prediction",
                                _fmt_frame(hot.head(12).drop("kind"), path_cols=("from_path", "to_path"))
                                .rename({"from_path": "current", "to_path": "predicted"})))
    if not rev_pairs.is_empty():
        sec.tables.append(Table("Confusion hot-spots: model suggestion vs reviewer's choice",
                                _fmt_frame(rev_pairs.head(12).drop("kind"), path_cols=("from_path", "to_path"))
                                .rename({"from_path": "suggested", "to_path": "reviewer chose"})))
    elif ans.height:
        sec.text.append("Reviewers kept every suggestion they answered: no suggestion-vs-reviewer confusion.")
    return sec


# --------------------------------------------------------------------------------------------------
# Taxonomy health
# --------------------------------------------------------------------------------------------------
def taxonomy_health(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame]) -> Section:
    sec = Section("taxonomy", "Taxonomy health", "")
    sec.notes += inp.missing.get("taxonomy", [])
    pred = inp.predictions
    tax = inp.taxonomy
    pred_counts = dict(zip(*_vc(pred, "category_path"), strict=True))
    cur_counts = dict(zip(*_vc(pred, "current_category_path"), strict=True))
    label_paths = set(inp.labels["category_path"].drop_nulls().to_list()) if not inp.labels.is_empty() else set()
    # overloaded nodes (by predicted count)
    nonzero = sorted(pred_counts.values())
    median = float(nonzero[len(nonzero) // 2]) if nonzero else 0.0
    if len(nonzero) % 2 == 0 and nonzero:
        median = (nonzero[len(nonzero) // 2 - 1] + nonzero[len(nonzero) // 2]) / 2
    top = sorted(pred_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    figs["node_median"] = median
    if top:
        sec.charts.append(Chart("Overloaded nodes", charts.barh(
            [charts.short_path(p) for p, _ in top], [n for _, n in top],
            title="Busiest categories (predicted) vs the median category", xlabel="products",
            ref=median, ref_label=f"median {median:g}"),
            "bar chart of the categories with the most predicted products, with the median marked"))
        over = pl.DataFrame({"category_path": [p for p, _ in top], "products": [n for _, n in top],
                             "times the median": [n / median if median else None for _, n in top]})
        tables["overloaded_nodes"] = over
    if tax is None:
        sec.headline = (f"Products landed in {plural(len(pred_counts), 'category', 'categories')}; "
                        "the taxonomy itself could not be loaded, so empty and deprecated nodes are unknown.")
        return sec
    nodes = list(tax)
    used: set[str] = set()
    for p in list(pred_counts) + list(cur_counts):
        segs = [s.strip() for s in str(p).split(">")]
        for i in range(1, len(segs) + 1):
            used.add(SEP.join(segs[:i]).casefold())
    rows = []
    for node in nodes:
        rows.append({"category_id": node.id, "category_path": node.path, "depth": int(node.depth),
                     "is_leaf": bool(node.is_leaf), "top_level": top_level(node.path),
                     "current_count": int(cur_counts.get(node.path, 0)), "predicted_count": int(pred_counts.get(node.path, 0)),
                     "in_use": node.path.casefold() in used})
    node_df = pl.DataFrame(rows, schema={"category_id": pl.String, "category_path": pl.String, "depth": pl.Int64,
                                         "is_leaf": pl.Boolean, "top_level": pl.String, "current_count": pl.Int64,
                                         "predicted_count": pl.Int64, "in_use": pl.Boolean})
    tables["taxonomy_nodes"] = node_df
    empty = node_df.filter(~pl.col("in_use"))
    empty_leaves = int(empty["is_leaf"].sum()) if not empty.is_empty() else 0
    deprecated = {p: n for p, n in cur_counts.items() if tax.find_path(p) is None}
    dep_items = sum(deprecated.values())
    only_pred = sorted(set(pred_counts) - set(cur_counts))
    never_pred = sorted(p for p in cur_counts if p not in pred_counts and p not in deprecated)
    labels_missing = sorted(p for p in label_paths if tax.find_path(p) is None)
    figs.update(taxonomy_nodes=len(nodes), empty_nodes=empty.height, deprecated_items=dep_items,
                deprecated_paths=len(deprecated))
    sec.headline = (
        f"{num(empty.height)} of {num(len(nodes))} taxonomy nodes ({pct(share(empty.height, len(nodes)))}) hold no "
        f"product, current or predicted; {plural(dep_items, 'product')} still sit on "
        f"{plural(len(deprecated), 'category path', 'category paths')} that are not in the taxonomy any more."
    )
    if top and median:
        sec.headline += f" The busiest category holds {top[0][1] / median:.0f}× the median."
    sec.facts = [
        ("taxonomy nodes", num(len(nodes))), ("empty nodes", f"{num(empty.height)} ({num(empty_leaves)} leaves)"),
        ("nodes only in predictions (no product filed there today)", num(len(only_pred))),
        ("current categories shelfwise never predicts", num(len(never_pred))),
        ("products on deprecated paths", f"{num(dep_items)} on {num(len(deprecated))} paths"),
        ("human labels on paths missing from the taxonomy", num(len(labels_missing))),
    ]
    branch = (node_df.group_by("top_level").agg(pl.len().alias("nodes"), (~pl.col("in_use")).sum().alias("empty"))
              .with_columns((pl.col("empty") / pl.col("nodes")).alias("share empty"))
              .sort(["empty", "top_level"], descending=[True, False]))
    if not empty.is_empty():
        shown = branch.filter(pl.col("empty") > 0).head(12)
        sec.charts.append(Chart("Empty nodes by branch", charts.barh(
            [charts.short_path(x, keep=1, width=38) for x in shown["top_level"]], shown["share empty"].to_list(),
            title="Share of nodes with no product, by top-level branch", kind="pct",
            colors=charts.PALETTE["second"]), "bar chart of the share of empty taxonomy nodes per branch"))
        sec.tables.append(Table("Empty nodes by top-level branch", _fmt_frame(branch.head(15), pct_cols=("share empty",))))
    if deprecated:
        dep_df = pl.DataFrame({"current_category_path": list(deprecated), "products": list(deprecated.values())}).sort(
            ["products", "current_category_path"], descending=[True, False])
        tables["deprecated_paths"] = dep_df
        sec.tables.append(Table("Products left on category paths that are not in the taxonomy", dep_df.head(15)))
    lists = []
    for name, values in (("only in predictions", only_pred), ("never predicted", never_pred),
                         ("human labels not in the taxonomy", labels_missing)):
        for v in values:
            lists.append({"kind": name, "category_path": v})
    tables["node_sets"] = pl.DataFrame(lists, schema={"kind": pl.String, "category_path": pl.String})
    if only_pred or never_pred:
        ex = pl.DataFrame({
            "set": ["only in predictions", "current categories never predicted"],
            "nodes": [len(only_pred), len(never_pred)],
            "examples": ["; ".join(charts.short_path(p) for p in only_pred[:3]),
                         "; ".join(charts.short_path(p) for p in never_pred[:3])]})
        sec.tables.append(Table("Nodes used on one side only", ex))
    if not label_paths:
        sec.notes.append("no human labels yet, so label paths could not be checked against the taxonomy")
    return sec


def _vc(frame: pl.DataFrame, col: str) -> tuple[list[str], list[int]]:
    if frame.is_empty():
        return [], []
    vc = frame.filter(pl.col(col).is_not_null() & (pl.col(col) != "")).group_by(col).agg(pl.len().alias("n"))
    return vc[col].to_list(), vc["n"].to_list()


# --------------------------------------------------------------------------------------------------
# Change and drift
# --------------------------------------------------------------------------------------------------
def drift(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame]) -> Section:
    sec = Section("drift", "Change and drift", "")
    sec.notes += inp.missing.get("drift", [])
    pred = inp.predictions
    prev = inp.previous_predictions
    cur_top = top_counter(pred)
    if prev is None or prev.is_empty():
        sec.headline = ("This is the first run to compare against: churn and distribution shift appear from the "
                        "next run on." if inp.previous_run_id is None else
                        f"The previous run {inp.previous_run_id} has no readable predictions, so churn is unknown.")
        figs.update(churn_moved=None, churn_rate=None, js_divergence=None, psi_top=None)
        tables["category_distribution"] = _distribution(Counter(), cur_top, Counter(),
                                                        _vcounter(pred))
        if cur_top:
            labels, vals = _top_shares(cur_top, Counter())
            sec.charts.append(Chart("Category mix", charts.barh(
                labels, vals["tonight"], title="Tonight's mix by top-level category", kind="pct"),
                "bar chart of the share of products per top-level category"))
        return sec
    a = prev.select("sku_id", pl.col("category_id").alias("prev_id"), pl.col("category_path").alias("prev_path"))
    j = pred.select("sku_id", "category_id", "category_path").join(a, on="sku_id", how="inner")
    moved = j.filter(pl.col("category_id") != pl.col("prev_id"))
    n_both, n_moved = j.height, moved.height
    new_skus = pred.join(a, on="sku_id", how="anti")
    gone = a.join(pred.select("sku_id"), on="sku_id", how="anti").height
    flows = (moved.group_by("prev_path", "category_path").agg(pl.len().alias("count"))
             .sort(["count", "prev_path", "category_path"], descending=[True, False, False])
             .rename({"prev_path": "from_path", "category_path": "to_path"}))
    tables["churn"] = flows
    prev_top = top_counter(prev)
    prev_leaf, cur_leaf = _vcounter(prev), _vcounter(pred)
    js_top = jensen_shannon(prev_top, cur_top)
    js_leaf = jensen_shannon(prev_leaf, cur_leaf)
    psi_top = psi(prev_top, cur_top)
    figs.update(churn_moved=n_moved, churn_rate=share(n_moved, n_both), js_divergence=js_leaf, js_divergence_top=js_top,
                psi_top=psi_top, new_skus=new_skus.height, gone_skus=gone)
    tables["category_distribution"] = _distribution(prev_top, cur_top, prev_leaf, cur_leaf)
    size = ("stayed stable" if psi_top < 0.1 else "shifted moderately" if psi_top < 0.25 else "shifted a lot")
    sec.headline = (
        f"{num(n_moved)} of {num(n_both)} products ({pct(share(n_moved, n_both), 1)}) moved category since run "
        f"{inp.previous_run_id}; the top-level mix {size} (PSI {psi_top:.3f}; Jensen-Shannon divergence "
        f"{js_top:.3f} at the top level, {js_leaf:.3f} over all categories). {num(new_skus.height)} products are "
        f"new, {num(gone)} dropped out."
    )
    ps = inp.previous_summary or {}
    if ps.get("model_version") and ps.get("model_version") != inp.summary.get("model_version"):
        sec.text.append(f"The model changed since the previous run ({ps.get('model_version')} → "
                        f"{inp.summary.get('model_version')}): part of the churn is the new model's doing.")
    if ps.get("taxonomy_version") and ps.get("taxonomy_version") != inp.summary.get("taxonomy_version"):
        sec.text.append(f"The taxonomy changed since the previous run ({ps.get('taxonomy_version')} → "
                        f"{inp.summary.get('taxonomy_version')}).")
    sec.facts = [("products in both runs", num(n_both)), ("moved category", num(n_moved)),
                 ("churn", pct(share(n_moved, n_both), 1)), ("new products", num(new_skus.height)),
                 ("dropped out", num(gone)), ("JS divergence (categories)", f"{js_leaf:.4f}"),
                 ("JS divergence (top level)", f"{js_top:.4f}"), ("PSI (top level)", f"{psi_top:.4f}")]
    if not flows.is_empty():
        shown = flows.head(10)
        sec.charts.append(Chart("Top category moves", charts.barh(
            [charts.pair_labels(x, y) for x, y in zip(shown["from_path"], shown["to_path"], strict=True)], shown["count"].to_list(),
            title="Biggest moves since the previous run (from → to)", xlabel="products",
            colors=charts.PALETTE["accent"]), "bar chart of the largest category-to-category moves"))
        sec.tables.append(Table("Biggest category moves since the previous run",
                                _fmt_frame(flows.head(12), path_cols=("from_path", "to_path"))
                                .rename({"from_path": "from", "to_path": "to"})))
    labels, vals = _top_shares(cur_top, prev_top)
    if labels:
        sec.charts.append(Chart("Top-level mix", charts.grouped_barh(
            labels, {"previous run": vals["previous"], "tonight": vals["tonight"]},
            title="Share of products per top-level category"),
            "grouped bars of top-level category shares, previous run vs tonight"))
    if not new_skus.is_empty():
        new_top = top_counter(new_skus)
        mix = pl.DataFrame({"top_level": list(new_top), "new products": list(new_top.values())}).with_columns(
            (pl.col("new products") / new_skus.height).alias("share of new"),
            pl.col("top_level").replace_strict(
                {t: n / max(1, sum(cur_top.values())) for t, n in cur_top.items()}, default=0.0,
                return_dtype=pl.Float64).alias("share of all"),
        ).sort("new products", descending=True)
        tables["new_product_mix"] = mix
        sec.tables.append(Table("New-product mix by top-level category",
                                _fmt_frame(mix.head(12), pct_cols=("share of new", "share of all"))))
    return sec


def _vcounter(frame: pl.DataFrame) -> Counter[str]:
    keys, vals = _vc(frame, "category_path")
    return Counter(dict(zip(keys, vals, strict=True)))


def _top_shares(cur: Counter[str], prev: Counter[str], k: int = 10) -> tuple[list[str], dict[str, list[float]]]:
    tc, tp = max(1, sum(cur.values())), max(1, sum(prev.values()))
    keys = sorted(set(cur) | set(prev), key=lambda x: -(cur.get(x, 0) / tc + prev.get(x, 0) / tp))[:k]
    return ([charts.short_path(x, keep=1, width=38) for x in keys],
            {"tonight": [cur.get(x, 0) / tc for x in keys], "previous": [prev.get(x, 0) / tp for x in keys]})


def _distribution(prev_top: Counter[str], cur_top: Counter[str], prev_leaf: Counter[str],
                  cur_leaf: Counter[str]) -> pl.DataFrame:
    rows = []
    for level, p, c in (("top_level", prev_top, cur_top), ("category", prev_leaf, cur_leaf)):
        tp, tc = sum(p.values()), sum(c.values())
        for k in sorted(set(p) | set(c)):
            rows.append({"level": level, "category": k, "previous_count": int(p.get(k, 0)),
                         "current_count": int(c.get(k, 0)),
                         "previous_share": p.get(k, 0) / tp if tp else None,
                         "current_share": c.get(k, 0) / tc if tc else None})
    return pl.DataFrame(rows, schema={"level": pl.String, "category": pl.String, "previous_count": pl.Int64,
                                      "current_count": pl.Int64, "previous_share": pl.Float64,
                                      "current_share": pl.Float64})


# --------------------------------------------------------------------------------------------------
# Reviewers
# --------------------------------------------------------------------------------------------------
AGE_BUCKETS = (("< 1 day", 1.0), ("1–3 days", 3.0), ("3–7 days", 7.0), ("1–4 weeks", 28.0), ("> 4 weeks", math.inf))


def reviewers(inp: RunInputs, figs: dict[str, Any], tables: dict[str, pl.DataFrame], *, now: dt.datetime) -> Section:
    sec = Section("reviewers", "Reviewers", "")
    d = inp.decisions
    items = inp.items
    now_naive = now.astimezone(dt.UTC).replace(tzinfo=None)
    # backlog
    open_items = items.filter(pl.col("status").is_in(["open", "claimed"])) if not items.is_empty() else items
    ages = [(now_naive - c).total_seconds() / 86400 if c is not None else 0.0 for c in open_items["created_at"].to_list()]
    buckets = [next(name for name, hi in AGE_BUCKETS if a < hi) for a in ages]
    backlog = (pl.DataFrame({"queue": open_items["queue"].to_list(), "age": buckets},
                            schema={"queue": pl.String, "age": pl.String})
               .group_by("queue", "age").agg(pl.len().alias("open_items")).sort("queue", "age"))
    tables["backlog"] = backlog
    oldest = max(ages) if ages else None
    figs.update(open_backlog=open_items.height, oldest_open_days=oldest)
    # decisions
    if d.is_empty():
        figs.update(decisions=0, reviewers=0, median_seconds=None, kappa=None, double_checked=0)
        sec.headline = (f"No reviewer decisions yet (no audit answers yet); {plural(open_items.height, 'item')} "
                        f"{'is' if open_items.height == 1 else 'are'} waiting in the review queues"
                        + (f", the oldest for {age(oldest)}." if oldest is not None else "."))
        sec.notes += [n for n in inp.missing.get("queue", [])] or ["no reviewer decisions recorded yet"]
    else:
        dd = d.with_columns((pl.col("duration_ms") / 1000.0).alias("seconds"))
        stats = (dd.group_by("reviewer").agg(
            pl.len().alias("decisions"), (pl.col("kind") == "accept").sum().alias("accepted"),
            (pl.col("kind") == "choose").sum().alias("corrected"),
            (~pl.col("kind").is_in(ANSWER_KINDS)).sum().alias("other"),
            pl.col("seconds").median().alias("median_seconds"), pl.col("seconds").quantile(0.9).alias("p90_seconds"),
            pl.col("decided_at").min().alias("first"), pl.col("decided_at").max().alias("last"))
            .sort(["decisions", "reviewer"], descending=[True, False]))
        tables["reviewer_stats"] = stats
        med_raw = dd["seconds"].median()
        med = float(med_raw) if isinstance(med_raw, int | float) and not math.isnan(med_raw) else None
        day = now_naive - dt.timedelta(days=1)
        last_day = int(dd.filter(pl.col("decided_at") >= day).height)
        # two reviewers on one item: first two answers by different people
        kappa, n_double, raw = _double_checks(d)
        figs.update(decisions=d.height, reviewers=stats.height, median_seconds=med, kappa=kappa,
                    double_checked=n_double, reviewer_raw_agreement=raw, decisions_last_day=last_day)
        sec.headline = (
            f"{plural(stats.height, 'reviewer')} made {plural(d.height, 'decision')} ({num(last_day)} in the last "
            f"24 hours), taking a median {med:.0f} s each" if med is not None else
            f"{plural(stats.height, 'reviewer')} made {plural(d.height, 'decision')} ({num(last_day)} in the last 24 hours)")
        sec.headline += (f"; {plural(open_items.height, 'item')} {'is' if open_items.height == 1 else 'are'} waiting"
                         + (f", the oldest for {age(oldest)}" if oldest is not None else "") + ". ")
        if n_double:
            sec.headline += (f"On {plural(n_double, 'item')} answered by two reviewers they agreed {pct(raw)} of the "
                             f"time (Cohen's κ {kappa:.2f}).")
        else:
            sec.headline += "No item has been answered by two reviewers yet, so their agreement is unknown."
            sec.notes.append("no item answered by two reviewers yet: Cohen's kappa needs double-checked items")
        sec.facts = [("decisions", num(d.height)), ("reviewers", num(stats.height)),
                     ("decisions in the last 24 h", num(last_day)),
                     ("median time per decision", f"{med:.1f} s" if med is not None else "n/a"),
                     ("items answered by two reviewers", num(n_double)),
                     ("agreement between reviewers", "n/a" if not n_double else f"{pct(raw)} (κ {kappa:.2f})")]
        per_day = (dd.with_columns(pl.col("decided_at").dt.date().alias("day")).group_by("day", "reviewer")
                   .agg(pl.len().alias("n")).sort("day"))
        days = sorted(set(per_day["day"].to_list()))[-14:]
        people = stats["reviewer"].to_list()[:6]
        series = {}
        for who in people:
            m = {r["day"]: r["n"] for r in per_day.filter(pl.col("reviewer") == who).iter_rows(named=True)}
            series[who] = [m.get(x, 0) for x in days]
        others = per_day.filter(~pl.col("reviewer").is_in(people))
        if not others.is_empty():
            m2 = dict(others.group_by("day").agg(pl.col("n").sum()).iter_rows())
            series["others"] = [m2.get(x, 0) for x in days]
        sec.charts.append(Chart("Throughput", charts.stacked_bars(
            [x.strftime("%d %b") for x in days], series, title="Decisions per day, by reviewer", ylabel="decisions"),
            "stacked bars of reviewer decisions per day"))
        show = stats.select("reviewer", "decisions", "accepted", "corrected", "other",
                            pl.col("median_seconds").round(1), pl.col("p90_seconds").round(1))
        sec.tables.append(Table("Reviewer throughput and time per decision", show))
    if open_items.height:
        qs = sorted(set(open_items["queue"].to_list()))
        series = {}
        for qn in qs:
            m = {r["age"]: r["open_items"] for r in backlog.filter(pl.col("queue") == qn).iter_rows(named=True)}
            series[qn] = [m.get(name, 0) for name, _ in AGE_BUCKETS]
        sec.charts.append(Chart("Backlog age", charts.stacked_bars(
            [name for name, _ in AGE_BUCKETS], series, title="Open review items by age and queue",
            ylabel="open items"), "stacked bars of open review items per age bucket and queue"))
    elif inp.queue_ok:
        sec.text.append("The review queues are empty: nothing is waiting for a reviewer.")
    return sec


def _double_checks(d: pl.DataFrame) -> tuple[float | None, int, float | None]:
    a = _with_choice(d.filter(pl.col("kind").is_in(ANSWER_KINDS))).sort("decided_at")
    first, second = [], []
    for _, grp in a.group_by("item_key"):
        seen: dict[str, str | None] = {}
        for who, choice in zip(grp["reviewer"], grp["chosen_id"], strict=True):
            if who not in seen:
                seen[who] = choice
        if len(seen) >= 2:
            vals = list(seen.values())
            first.append(vals[0] or "")
            second.append(vals[1] or "")
    if not first:
        return None, 0, None
    raw = sum(x == y for x, y in zip(first, second, strict=True)) / len(first)
    return cohen_kappa(first, second), len(first), raw


# --------------------------------------------------------------------------------------------------
# Trends (from history.parquet)
# --------------------------------------------------------------------------------------------------
def trends(history: pl.DataFrame, figs: dict[str, Any], *, last: int, target: float,
           run_id: str | None = None) -> Section:
    """Charts over the last ``last`` runs of the history, ending at ``run_id`` (later runs are left out)."""
    sec = Section("trends", f"Trends over the last {last} runs", "")
    ids = history["run_id"].to_list()
    if run_id in ids:
        history = history.head(ids.index(run_id) + 1)
    h = history.tail(last)
    if h.height < 2:
        sec.headline = "Trends appear from the second run on (history has one run so far)."
        return sec
    x = _run_labels(h["run_id"].to_list())

    def col(name: str) -> list[Any]:
        return h[name].to_list() if name in h.columns else [None] * h.height

    ar = [v for v in col("auto_rate") if v is not None]
    sec.headline = (f"Over the last {h.height} runs the auto-accept rate moved from {pct(ar[0])} to {pct(ar[-1])}"
                    if ar else f"History holds {h.height} runs")
    pr = [v for v in col("precision") if v is not None and not (isinstance(v, float) and math.isnan(v))]
    sec.headline += (f" and estimated precision from {pct(pr[0])} to {pct(pr[-1])}." if len(pr) >= 2 else ".")
    sec.charts.append(Chart("Auto-accept rate", charts.trend(x, {"auto-accepted": col("auto_rate")},
                                                           title="Auto-accepted share"), "line chart of auto-accept rate per run"))
    sec.charts.append(Chart("Precision", charts.trend(
        x, {"estimated precision": col("precision")}, band=(col("precision_lo"), col("precision_hi")), target=target,
        target_label=f"target {pct(target)}", title="Precision of auto-accepted (audit)"),
        "line chart of estimated precision with its confidence band and the target"))
    sec.charts.append(Chart("Volumes", charts.trend(
        x, {"classified": col("classified"), "quarantined": col("quarantined")}, kind="int", title="Products per run"),
        "line chart of classified and quarantined products per run"))
    sec.charts.append(Chart("Churn and suspects", charts.trend(
        x, {"moved category": col("churn_rate"), "disagree with catalog": col("suspect_rate")},
        title="Churn and suspected misfiles"), "line chart of churn and suspect rates per run"))
    sec.charts.append(Chart("Backlog", charts.trend(x, {"open review items": col("open_backlog")}, kind="int",
                                                  title="Review backlog"), "line chart of open review items"))
    if any(v for v in col("llm_calls") + col("llm_cost_usd") if v is not None):
        sec.charts.append(Chart("LLM cost", charts.trend(x, {"LLM cost (USD)": col("llm_cost_usd")}, kind="float",
                                                       title="LLM cost per run (USD)"), "line chart of LLM cost per run"))
    else:
        sec.text.append("The LLM step made no calls in these runs, so there is no LLM cost to chart.")
    return sec


def _run_labels(run_ids: list[str]) -> list[str]:
    """'20261127T072746Z-aff277' -> '11-27 07:27' (with seconds when two runs share a minute)."""
    def fmt(r: str, seconds: bool) -> str:
        try:
            t = dt.datetime.strptime(r[:16], "%Y%m%dT%H%M%SZ")
        except ValueError:
            return r[:14]
        return t.strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")

    short = [fmt(r, False) for r in run_ids]
    if len(set(short)) < len(short):
        short = [fmt(r, True) for r in run_ids]
    return short
