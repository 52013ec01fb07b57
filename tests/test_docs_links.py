"""The README and docs/ link to each other: every relative link must lead to a file that exists and, when it
names a heading (`page.md#heading`), to a heading that exists; every page in docs/ is reachable from
docs/index.md. A moved page or a renamed heading fails here instead of leaving a dead link for a reader."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


def _prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code removed (links there are examples, not links)."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, _INLINE_CODE.sub("", line)


def links(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return [(n, m.group(1)) for n, line in _prose_lines(text) for m in _LINK.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    text = path.read_text(encoding="utf-8")
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for line, target in links(path):
        if target.startswith(_EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / unquote(file_part)).resolve()
        where = f"{path.relative_to(root)}:{line}: link {target!r}"
        shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
        if not dest.exists():
            problems.append(f"{where}: {shown} does not exist")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {shown}")
    return problems


def test_slug_follows_github() -> None:
    assert slug("Set-up: two commands") == "set-up-two-commands"
    assert slug("Catalog input (`shelfwise/catalog.py`)") == "catalog-input-shelfwisecatalogpy"
    assert slug("`shelfwise classify` throughput and memory") == "shelfwise-classify-throughput-and-memory"


def test_the_checker_sees_a_broken_link_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n", encoding="utf-8")
    page = tmp_path.resolve() / "a.md"
    page.write_text(
        "[ok](b.md#real-heading) [gone](missing.md) [bad](b.md#nope) `[code](x.md)`\n"
        "```\n[fenced](y.md)\n```\n[web](https://example.com/z.md)\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path.resolve())
    assert len(problems) == 2, problems
    assert "missing.md does not exist" in problems[0]
    assert "#nope" in problems[1]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path: Path) -> None:
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_points_to_existing_docs_pages() -> None:
    targets = {t.partition("#")[0] for _, t in links(REPO / "README.md") if t.startswith("docs/")}
    assert "docs/index.md" in targets, "the README must link to docs/index.md"
    missing = sorted(t for t in targets if not (REPO / t).is_file())
    assert not missing, f"README links to docs pages that do not exist: {missing}"


def test_every_docs_page_is_listed_in_the_index() -> None:
    targets = [t for _, t in links(DOCS / "index.md") if not t.startswith(_EXTERNAL)]
    listed = {(DOCS / t.partition("#")[0]).resolve() for t in targets}
    pages = [p for p in sorted(DOCS.glob("*.md")) if p.name != "index.md"]
    orphans = [p.name for p in pages if p.resolve() not in listed]
    assert not orphans, f"docs pages nobody can find: add a row for each to docs/index.md: {orphans}"
