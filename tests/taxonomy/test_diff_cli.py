"""`shelfwise taxonomy diff` as a user runs it: real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHELFWISE, "taxonomy", "diff", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_diff_of_a_reorganised_shop_tree_writes_json_and_html(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("Home\nHome > Lamps\nHome > Vases\nHome > Clocks\nToys\nToys > Kites\n")
    (tmp_path / "new.txt").write_text(
        "Home\nHome > Lighting\nHome > Decor\nToys\nToys > Kites\nToys > Robots\n"
    )
    (tmp_path / "map.csv").write_text("old,new\nHome > Lamps,Home > Lighting\nHome > Vases,Home > Decor\n")
    out, page = tmp_path / "diff.json", tmp_path / "diff.html"
    proc = _run(
        str(tmp_path / "old.txt"),
        str(tmp_path / "new.txt"),
        "--mapping",
        str(tmp_path / "map.csv"),
        "--out",
        str(out),
        "--html",
        str(page),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    paths = doc["paths"]
    assert sorted(paths["old"][i] for i in doc["removed"]) == [
        "Home > Clocks",
        "Home > Lamps",
        "Home > Vases",
    ]
    assert sorted(paths["new"][i] for i in doc["added"]) == [
        "Home > Decor",
        "Home > Lighting",
        "Toys > Robots",
    ]
    assert {paths["old"][a]: paths["new"][b] for a, b in doc["mapped"].items()} == {
        "Home > Lamps": "Home > Lighting",
        "Home > Vases": "Home > Decor",
    }
    assert [paths["old"][i] for i in doc["removed_without_target"]] == ["Home > Clocks"]
    assert doc["counts"]["mapped_renamed"] == 2 and doc["renamed"] == [] and doc["moved"] == []
    assert "Removed without a target (1)" in page.read_text()
    assert "removed_without_target" in proc.stdout


def test_a_mapping_naming_an_unknown_node_fails_with_row_and_fix(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("Home\nHome > Lamps\n")
    (tmp_path / "new.txt").write_text("Home\nHome > Lighting\n")
    (tmp_path / "map.csv").write_text("old,new\nHome > Lamps,Home > Lightning\n")
    proc = _run(str(tmp_path / "old.txt"), str(tmp_path / "new.txt"), "--mapping", str(tmp_path / "map.csv"))
    assert proc.returncode == 2
    assert "row 2: column 'new' value 'Home > Lightning'" in proc.stderr and "fix:" in proc.stderr
