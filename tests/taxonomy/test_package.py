"""The taxonomy package is the ground floor: a small public surface, no imports of other shelfwise parts."""

from __future__ import annotations

import ast
from pathlib import Path

import taxonomy

ALLOWED_OURS = {"shelfwise.errors"}
OUR_PACKAGES = {"shelfwise", "classifiers", "verification", "flows", "taxonomy"}


def test_public_names_exist_and_are_listed() -> None:
    assert sorted(taxonomy.__all__) == sorted(set(taxonomy.__all__))
    for name in taxonomy.__all__:
        assert getattr(taxonomy, name) is not None
    public_modules = {
        p.stem for p in Path(taxonomy.__file__).parent.glob("*.py") if not p.stem.startswith("_")
    }
    assert public_modules == {"search"}  # everything else lives in _private modules


def test_imports_nothing_of_ours_but_errors(repo_root: Path) -> None:
    offenders = []
    for file in sorted((repo_root / "taxonomy").glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in OUR_PACKAGES and name not in ALLOWED_OURS:
                    offenders.append(f"{file.name}: {name}")
    assert offenders == []
