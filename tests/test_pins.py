"""The pinned installs (.ci/constraints.txt, .ci/constraints-ls.txt) cover what the project asks for.

`.ci/run` installs with `-c` these files, so a dependency added to pyproject.toml without `bash .ci/lock`
would be installed unpinned (or refused, if its range excludes the pin). These tests name what to do.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

RELOCK = "run `bash .ci/lock` and commit the new pins (docs/development.md#pinned-installs)"


def _pins(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path}:{number}: {line!r} is not NAME==VERSION; {RELOCK}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _deps_sh(repo_root: Path) -> dict[str, str]:
    text = (repo_root / ".ci" / "deps.sh").read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, flags=re.MULTILINE))


def test_every_dependency_and_extra_is_pinned_inside_its_range(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in _deps_sh(repo_root)["EXTRAS"].split(","):
        wanted += project["optional-dependencies"][extra]
    pins = _pins(repo_root / ".ci" / "constraints.txt")
    problems = []
    for text in wanted:
        req = Requirement(text)
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} (pyproject.toml: {text!r}) has no pin")
        elif not req.specifier.contains(pin, prereleases=True):
            problems.append(f"{req.name} is pinned at {pin}, outside pyproject.toml's {text!r}")
    assert not problems, f"{'; '.join(problems)}: {RELOCK}"


def test_pins_name_the_versions_ci_installs(repo_root: Path) -> None:
    deps = _deps_sh(repo_root)
    pins = _pins(repo_root / ".ci" / "constraints.txt")
    assert pins["torch"] == Version(deps["TORCH_VERSION"]), f"torch pin differs from .ci/deps.sh; {RELOCK}"
    assert "shelfwise" not in pins, "the project itself must not be pinned (an editable install)"
    ls_pins = _pins(repo_root / ".ci" / "constraints-ls.txt")
    assert ls_pins["label-studio"] == Version(deps["LABEL_STUDIO_VERSION"]), f"Label Studio pin: {RELOCK}"
