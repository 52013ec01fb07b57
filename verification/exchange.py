"""Export and import of final review decisions: CSV and Label Studio JSON.

Label Studio JSON is the task export format (a list of tasks, each with ``data``, ``annotations`` and
``predictions``; every annotation has a ``result`` list of regions ``{from_name, to_name, type, value}``).
A decision is written as:

- ``accept`` / ``choose``: a ``taxonomy`` region (``value.taxonomy = [[level1, level2, ...]]``, the path
  split on `` > ``), plus a ``textarea`` region ``category_id`` carrying the taxonomy node id;
- every kind: a ``choices`` region ``decision`` with the kind (``accept``, ``choose``, ``not_product``,
  ``needs_data``).

The reviewer's name, note and decision time go into ``meta`` (``reviewer``, ``note``, ``decided_at``,
and ``decision_region``, the id of the annotation's ``decision`` region), not ``completed_by``: Label
Studio refuses a whole import whose ``completed_by`` is not one of its own users. Label Studio 1.23 keeps
a task's ``meta`` but drops an annotation's, so the task carries it (one decision per task) and the
annotation too; on reading, the task's ``meta`` counts only for the annotation that still holds the
``decision_region`` (one made later in Label Studio is credited to its Label Studio user).
Each task's ``data`` has a ``text`` field (title, then description) that every region points at
(``to_name="text"``). The model's suggestion goes into ``predictions`` (``model_version``, ``score``, a
taxonomy region). :func:`labelstudio_config` writes the matching labeling config for a taxonomy.

Cells a spreadsheet could run as a formula (text starting with ``= + - @``, TAB or CR) are written with
a leading ``'`` in CSV files and in the text fields of Label Studio tasks (Label Studio exports CSV too);
reading either format takes that ``'`` off again, so values round-trip unchanged.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shelfwise.errors import ConfigError
from verification._errors import QueueStoreError

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "FORMULA_PREFIXES",
    "labelstudio_config",
    "neutralise",
    "read",
    "restore",
    "write",
]

SEP = " > "
FORMATS = ("csv", "labelstudio")
KINDS = ("accept", "choose", "not_product", "needs_data", "skip")

CSV_COLUMNS = (
    "sku_id",
    "title",
    "category_id",
    "category_path",
    "kind",
    "reviewer",
    "decided_at",
    "previous_category_path",
    "suggested_category_id",
    "suggested_category_path",
    "confidence",
    "queue",
    "note",
    "duration_ms",
    "content_hash",
    "model_version",
    "taxonomy_version",
)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
DECISION_CHOICES = ("accept", "choose", "not_product", "needs_data")


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` when a spreadsheet would read it as a formula; non-text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def restore(value: Any) -> Any:
    """Undo :func:`neutralise` (a ``'`` in front of a formula character is taken off)."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def labelstudio_config(taxonomy: Any) -> str:
    """The Label Studio labeling config (XML) matching :func:`write`'s tasks for ``taxonomy``.

    ``decision`` (single choice of the decision kinds), ``category`` (a Taxonomy tag holding every node of
    ``taxonomy`` as nested choices, so paths read back as ``a > b > c``) and ``category_id`` (one text
    answer); all point at the ``text`` field of the task data, shown under the title.
    """
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$title")
    ET.SubElement(view, "Text", name="text", value="$text")
    choices = ET.SubElement(view, "Choices", name="decision", toName="text", choice="single", required="true")
    for kind in DECISION_CHOICES:
        ET.SubElement(choices, "Choice", value=kind)
    tax_tag = ET.SubElement(view, "Taxonomy", name="category", toName="text", maxUsages="1")

    def add(parent: ET.Element, node_id: str | None) -> None:
        for child in taxonomy.children(node_id):
            add(ET.SubElement(parent, "Choice", value=child.name), child.id)

    add(tax_tag, None)
    ET.SubElement(view, "TextArea", name="category_id", toName="text", maxSubmissions="1", rows="1")
    ET.indent(view, space=" ")
    return ET.tostring(view, encoding="unicode") + "\n"


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"decision file format {fmt!r} is not known; use one of {', '.join(FORMATS)}")
    return fmt


def _iso(value: _dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def write(records: Sequence[Mapping[str, Any]], path: Path, *, fmt: str) -> int:
    """Write final decisions (rows of the decisions table joined with item fields)."""
    fmt = _fmt(fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
            writer.writeheader()
            for r in records:
                row = {
                    "sku_id": r["sku_id"],
                    "title": r.get("title") or "",
                    "category_id": r.get("category_id") or "",
                    "category_path": r.get("category_path") or "",
                    "kind": r["kind"],
                    "reviewer": r["reviewer"],
                    "decided_at": _iso(r.get("decided_at")) or "",
                    "previous_category_path": r.get("current_category_path") or "",
                    "suggested_category_id": r.get("shown_category_id") or "",
                    "suggested_category_path": r.get("shown_category_path") or "",
                    "confidence": "" if r.get("shown_confidence") is None else repr(r["shown_confidence"]),
                    "queue": r.get("queue") or "",
                    "note": r.get("note") or "",
                    "duration_ms": "" if r.get("duration_ms") is None else r["duration_ms"],
                    "content_hash": r.get("content_hash") or "",
                    "model_version": r.get("model_version") or "",
                    "taxonomy_version": r.get("taxonomy_version") or "",
                }
                writer.writerow({key: neutralise(value) for key, value in row.items()})
        return len(records)
    tasks = [_task(i, r) for i, r in enumerate(records, start=1)]
    path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(tasks)


def _taxonomy_region(path: str, region_id: str) -> dict[str, Any]:
    return {
        "id": region_id,
        "from_name": "category",
        "to_name": "text",
        "type": "taxonomy",
        "origin": "manual",
        "value": {"taxonomy": [[part.strip() for part in path.split(">")]]},
    }


def _task(task_id: int, r: Mapping[str, Any]) -> dict[str, Any]:
    decided = _iso(r.get("decided_at"))
    result: list[dict[str, Any]] = [
        {
            "id": f"d{r['id']}",
            "from_name": "decision",
            "to_name": "text",
            "type": "choices",
            "origin": "manual",
            "value": {"choices": [r["kind"]]},
        }
    ]
    if r.get("category_path"):
        result.append(_taxonomy_region(r["category_path"], f"c{r['id']}"))
    if r.get("category_id"):
        result.append(
            {
                "id": f"i{r['id']}",
                "from_name": "category_id",
                "to_name": "text",
                "type": "textarea",
                "origin": "manual",
                "value": {"text": [r["category_id"]]},
            }
        )
    title = r.get("title") or ""
    text = "\n\n".join(part for part in (title, r.get("description") or "") if part) or str(r["sku_id"])
    data = {
        "sku_id": r["sku_id"],
        "title": title,
        "text": text,
        "description": r.get("description"),
        "brand": r.get("brand"),
        "image": r.get("image_path"),
        "current_category_path": r.get("current_category_path"),
        "suggested_category_id": r.get("shown_category_id"),
        "suggested_category_path": r.get("shown_category_path"),
        "confidence": r.get("shown_confidence"),
        "queue": r.get("queue"),
        "content_hash": r.get("content_hash"),
        "model_version": r.get("model_version"),
        "taxonomy_version": r.get("taxonomy_version"),
    }
    meta = {
        "reviewer": r["reviewer"],
        "note": r.get("note") or "",
        "decided_at": decided,
        "decision_region": f"d{r['id']}",
    }
    safe_meta = {key: neutralise(value) for key, value in meta.items()}
    task: dict[str, Any] = {
        "id": task_id,
        "data": {key: neutralise(value) for key, value in data.items()},
        "annotations": [
            {
                "id": r["id"],
                "result": result,
                "was_cancelled": False,
                "ground_truth": False,
                "created_at": decided,
                "updated_at": decided,
                "lead_time": None if r.get("duration_ms") is None else r["duration_ms"] / 1000.0,
                "task": task_id,
                "meta": safe_meta,
            }
        ],
        "predictions": [],
        "meta": safe_meta,
    }
    if r.get("shown_category_path"):
        task["predictions"].append(
            {
                "model_version": r.get("model_version") or "",
                "score": r.get("shown_confidence"),
                "result": [_taxonomy_region(r["shown_category_path"], f"p{r['id']}")],
            }
        )
    return task


# ---------------------------------------------------------------------------------------------- reading
def read(path: Path, *, fmt: str, taxonomy: Any | None = None) -> list[dict[str, Any]]:
    """Read decisions back; each record has sku_id, kind, category_id, category_path, reviewer, ... and
    ``where``."""
    fmt = _fmt(fmt)
    if not path.is_file():
        raise QueueStoreError(
            f"decision file {path} does not exist; give the path of an exported CSV or JSON file"
        )
    records = _read_csv(path) if fmt == "csv" else _read_labelstudio(path)
    for rec in records:
        if rec["kind"] not in KINDS:
            raise QueueStoreError(
                f"{path} {rec['where']}: field 'kind' has unknown value {rec['kind']!r}; use one of "
                f"{', '.join(KINDS)}"
            )
        if rec.get("category_path") and not rec.get("category_id") and taxonomy is not None:
            node = taxonomy.find_path(rec["category_path"])
            if node is not None:
                rec["category_id"] = str(node.id)
                rec["category_path"] = node.path
    return records


def _opt(value: Any) -> Any:
    return None if value in (None, "") else value


def _read_csv(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"sku_id", "kind"} - set(reader.fieldnames or [])
        if missing:
            raise QueueStoreError(
                f"{path} line 1: missing column(s) {', '.join(sorted(missing))} (found {reader.fieldnames}); "
                f"a decisions CSV needs at least sku_id, kind, category_id, category_path"
            )
        for line, raw_row in enumerate(reader, start=2):
            row = {key: restore(value) for key, value in raw_row.items()}
            if not (row.get("sku_id") or "").strip():
                raise QueueStoreError(
                    f"{path} line {line}: field 'sku_id' is empty; fill it or delete the row"
                )
            duration = _opt(row.get("duration_ms"))
            confidence = _opt(row.get("confidence"))
            try:
                duration_ms = None if duration is None else int(float(duration))
                conf = None if confidence is None else float(confidence)
            except ValueError as exc:
                raise QueueStoreError(
                    f"{path} line {line}: field 'duration_ms' or 'confidence' is not a number ({exc}); fix "
                    f"or clear it"
                ) from None
            out.append(
                {
                    "where": f"line {line}",
                    "sku_id": row["sku_id"].strip(),
                    "kind": (row.get("kind") or "").strip(),
                    "category_id": _opt(row.get("category_id")),
                    "category_path": _opt(row.get("category_path")),
                    "reviewer": _opt(row.get("reviewer")),
                    "decided_at": _opt(row.get("decided_at")),
                    "title": _opt(row.get("title")),
                    "previous_category_path": _opt(row.get("previous_category_path")),
                    "suggested_category_id": _opt(row.get("suggested_category_id")),
                    "suggested_category_path": _opt(row.get("suggested_category_path")),
                    "confidence": conf,
                    "queue": _opt(row.get("queue")),
                    "note": _opt(row.get("note")),
                    "duration_ms": duration_ms,
                    "content_hash": _opt(row.get("content_hash")),
                    "model_version": _opt(row.get("model_version")),
                    "taxonomy_version": _opt(row.get("taxonomy_version")),
                }
            )
    return out


def _read_labelstudio(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, task in enumerate(_ls_tasks(path)):
        record = _ls_record(path, index, task)
        if record is not None:
            out.append(record)
    return out


def _ls_tasks(path: Path) -> list[Any]:
    """The tasks of a Label Studio JSON export (one task object counts as a list of one)."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QueueStoreError(
            f"{path} line {exc.lineno}: not valid JSON ({exc.msg}); export the project from Label Studio as "
            f"JSON"
        ) from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise QueueStoreError(
            f"{path}: expected a JSON list of Label Studio tasks, got {type(tasks).__name__}"
        )
    return tasks


def _ls_record(path: Path, index: int, task: Any) -> dict[str, Any] | None:
    """The decision record of task number ``index``; ``None`` for a task nobody annotated."""
    where = f"task #{index + 1} (id {task.get('id')!r})" if isinstance(task, dict) else f"task #{index + 1}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise QueueStoreError(f"{path} {where}: a task needs a 'data' object with sku_id")
    data = {key: restore(value) for key, value in task["data"].items()}
    sku = data.get("sku_id")
    if sku in (None, ""):
        raise QueueStoreError(f"{path} {where}: data.sku_id is missing; every task must name its SKU")
    annotations = [
        a
        for a in task.get("annotations") or task.get("completions") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not annotations:
        return None  # an unannotated task carries no decision
    ann = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    kind, category_id, category_path = _ls_decision(ann)
    if kind is None:
        raise QueueStoreError(
            f"{path} {where}: the annotation has neither a 'decision' choice nor a taxonomy selection; "
            "label it in Label Studio or remove the task"
        )
    meta = _ls_meta(task, ann)
    return {
        "where": where,
        "sku_id": str(sku),
        "kind": kind,
        "category_id": category_id,
        "category_path": category_path,
        "reviewer": _ls_reviewer(meta, ann.get("completed_by")),
        "decided_at": meta.get("decided_at") or ann.get("updated_at") or ann.get("created_at"),
        "title": data.get("title"),
        "previous_category_path": data.get("current_category_path"),
        "suggested_category_id": data.get("suggested_category_id"),
        "suggested_category_path": data.get("suggested_category_path"),
        "confidence": data.get("confidence"),
        "queue": data.get("queue"),
        "note": meta.get("note") or None,
        "duration_ms": _ls_duration_ms(path, where, ann.get("lead_time")),
        "content_hash": data.get("content_hash"),
        "model_version": data.get("model_version"),
        "taxonomy_version": data.get("taxonomy_version"),
    }


def _ls_decision(ann: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """The annotation's decision kind, category id and category path (a bare taxonomy pick is 'choose')."""
    kind, category_id, category_path = None, None, None
    for region in ann.get("result") or []:
        if not isinstance(region, dict) or not isinstance(region.get("value") or {}, dict):
            continue  # not a region Label Studio writes
        rtype, value = region.get("type"), region.get("value") or {}
        if rtype == "choices" and region.get("from_name") == "decision" and value.get("choices"):
            kind = str(value["choices"][0])
        elif rtype == "taxonomy" and value.get("taxonomy"):
            category_path = SEP.join(str(p) for p in value["taxonomy"][0])
        elif rtype == "textarea" and region.get("from_name") == "category_id" and value.get("text"):
            category_id = str(restore(value["text"][0])).strip() or None
    if kind is None:
        kind = "choose" if category_path else None
    return kind, category_id, category_path


def _ls_duration_ms(path: Path, where: str, lead: Any) -> int | None:
    """The annotation's ``lead_time`` (seconds) in milliseconds."""
    try:
        return None if lead is None else round(float(lead) * 1000)
    except (TypeError, ValueError, OverflowError):
        raise QueueStoreError(
            f"{path} {where}: annotation lead_time {str(lead)[:40]!r} is not a number of seconds; "
            "fix or remove it"
        ) from None


def _ls_meta(task: Mapping[str, Any], ann: Mapping[str, Any]) -> dict[str, Any]:
    """Our ``meta`` for this annotation: its own, else the task's when it names one of its regions."""
    own = ann.get("meta")
    if isinstance(own, dict) and own.get("reviewer"):
        return {key: restore(value) for key, value in own.items()}
    task_meta = task.get("meta")
    if isinstance(task_meta, dict) and task_meta.get("decision_region"):
        regions = {r.get("id") for r in ann.get("result") or [] if isinstance(r, dict)}
        if task_meta["decision_region"] in regions:
            return {key: restore(value) for key, value in task_meta.items()}
    return {}


def _ls_reviewer(meta: Mapping[str, Any], completed_by: Any) -> str | None:
    """Who decided: ``meta.reviewer`` (our exports), else the Label Studio annotator (e-mail or user id)."""
    if meta.get("reviewer"):
        return str(meta["reviewer"])
    if isinstance(completed_by, dict):
        found = completed_by.get("email") or completed_by.get("id")
        return None if found is None else str(found)
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f"label-studio user {completed_by}"
    return None if completed_by in (None, "") else str(completed_by)
