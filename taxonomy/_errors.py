"""Taxonomy-specific subclasses of :class:`shelfwise.errors.TaxonomyError` (internal module)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shelfwise.errors import TaxonomyError

MAX_REPORTED = 20
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: where it is (``"line 12"``, ``"row 3"``, ``"entry 7"``), what, and the fix."""

    where: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}; fix: {self.fix}"


class TaxonomyValidationError(TaxonomyError):
    """A taxonomy file has one or more invalid lines. ``problems`` holds all of them (the message the
    first 20)."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=_position)
        shown = self.problems[:MAX_REPORTED]
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"taxonomy {source}: {len(self.problems)} {noun}"]
        lines += [f"  {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more (see .problems)")
        super().__init__("\n".join(lines))


def _position(problem: Problem) -> int:
    """Line/row/entry number of a problem, for reporting in file order (unknown positions last)."""
    match = _NUMBER.search(problem.where)
    return int(match.group()) if match else 1 << 62


class UnknownNodeError(TaxonomyError, KeyError):
    """An id or path is not in the taxonomy. Catch it as ``KeyError`` or as ``TaxonomyError``."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""
