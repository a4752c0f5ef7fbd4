"""The repository keeps its promises: README commands, CI script, configs, changelog."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_opens_with_install_and_quickstart_then_tests() -> None:
    first, second = readme_commands()[:2]
    assert "pip install" in first and "examples/quickstart.py" in first
    assert "pip install" in second and "pytest" in second


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines(), "CI must run the README's test command verbatim"


def test_pyproject_gives_ranges_not_pins() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"dependencies = \[\n(.*?)\n\]", text, re.S).group(1)
    assert "==" not in deps, "pin-free dependencies: use ranges"
    for name in ("torch", "lightning", "torchmetrics", "torchvision", "torch-geometric", "timm", "jsonargparse", "tensorboard"):
        assert f'"{name}' in deps, name


def test_changelog_has_unreleased_section() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
