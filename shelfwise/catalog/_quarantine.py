"""The quarantine: where bad catalog and review rows go (internal; re-exported by shelfwise.catalog)."""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any, Self, TextIO


# ==================================================================================================
# Quarantine
# ==================================================================================================
class QuarantineReason(StrEnum):
    # the row is dropped (counted in Quarantine.counts)
    MISSING_SKU_ID = "missing_sku_id"
    NO_TEXT = "no_text"
    DUPLICATE_SKU_ID = "duplicate_sku_id"
    BAD_CATEGORY = "bad_category"
    BAD_JSON_LINE = "bad_json_line"
    # the row is kept, one field nulled or kept as text (counted in Quarantine.warning_counts)
    BAD_PRICE = "bad_price"
    BAD_RATING = "bad_rating"
    BAD_ATTRIBUTES = "bad_attributes"
    BAD_IMAGE = "bad_image"
    IMAGE_NOT_FOUND = "image_not_found"  # counted only, no record


class Quarantine:
    """JSON Lines sink for bad rows: ``{file, row_number, sku_id, field, reason, fix, raw, severity, value}``.

    ``severity`` is ``"error"`` for rows that were dropped (``raw`` = the row verbatim) and ``"warning"``
    for kept rows with one field nulled (``raw`` is null: the row itself is in the output). ``counts``
    and ``total`` count dropped rows only; ``warning_counts`` / ``warnings`` the rest. With
    ``path=None`` the records are kept in memory (``records``) instead of written.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.counts: Counter[str] = Counter()
        self.warning_counts: Counter[str] = Counter()
        self.records: list[dict[str, Any]] = []
        self._fh: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @property
    def total(self) -> int:
        """Rows dropped."""
        return sum(self.counts.values())

    @property
    def warnings(self) -> int:
        return sum(self.warning_counts.values())

    def add(
        self,
        *,
        file: str | Path,
        row_number: int | None,
        sku_id: str | None,
        field: str,
        reason: QuarantineReason | str,
        fix: str,
        raw: Any = None,
        value: Any = None,
    ) -> None:
        """A dropped row (severity ``"error"``; ``raw`` = the row verbatim)."""
        self.counts[str(reason)] += 1
        where = {"file": str(file), "row_number": row_number, "sku_id": sku_id, "field": field}
        self._write(
            {**where, "reason": str(reason), "fix": fix, "raw": raw, "severity": "error", "value": value}
        )

    def warn(
        self,
        *,
        file: str | Path,
        row_number: int | None,
        sku_id: str | None,
        field: str,
        reason: QuarantineReason | str,
        fix: str,
        value: Any = None,
    ) -> None:
        """A kept row with one field nulled or kept as text (severity ``"warning"``, no ``raw``)."""
        self.warning_counts[str(reason)] += 1
        where = {"file": str(file), "row_number": row_number, "sku_id": sku_id, "field": field}
        self._write(
            {**where, "reason": str(reason), "fix": fix, "raw": None, "severity": "warning", "value": value}
        )

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.records.append(record)
        else:
            self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def count_only(self, reason: QuarantineReason | str, n: int = 1) -> None:
        """Count a warning without writing a record (e.g. image files not found)."""
        if n:
            self.warning_counts[str(reason)] += n

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> str:
        """One line for the CLI: ``"3 rows quarantined (no_text: 2, ...) -> path"``."""
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items())) or "none"
        text = f"{self.total} rows quarantined ({reasons})"
        if self.warnings:
            text += "; " + ", ".join(f"{k}: {v}" for k, v in sorted(self.warning_counts.items()))
        return text + (f" -> {self.path}" if self.path else "")

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """All records of a quarantine file (for tests and reports)."""
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
