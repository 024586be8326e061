"""Packaging: the conda environment installs this package, and pyproject declares every runtime dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DEPENDENCIES = {"jupyterlab", "papermill", "pandas", "httpx", "ipywidgets", "nbconvert", "psycopg"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_installs_the_package_with_a_matching_python() -> None:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    dependencies = environment["dependencies"]
    pip_sections = [d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml needs a pip section"
    assert any(re.fullmatch(r"-e\s+\.(\[[\w,]*dev[\w,]*\])?", line.strip()) for line in pip_sections[0])
    python = next(d for d in dependencies if isinstance(d, str) and d.startswith("python"))
    wanted = re.search(r"(\d+)\.(\d+)", python)
    required = re.search(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert wanted and required
    assert tuple(map(int, wanted.groups())) >= tuple(map(int, required.groups())), (python, required.group(0))
    assert "pip" in dependencies


def test_runtime_dependencies_are_declared() -> None:
    project = pyproject()["project"]
    declared = {requirement_name(r) for r in project["dependencies"]}
    assert declared >= PRODUCT_DEPENDENCIES, PRODUCT_DEPENDENCIES - declared
    dev = {requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {"pytest", "jsonschema", "ruff"} <= dev
    assert project["scripts"]["recsys-audit"] == "recsys_audit.cli:console"


def test_package_data_ships_the_schema_and_report_styles() -> None:
    patterns = pyproject()["tool"]["setuptools"]["package-data"]["recsys_audit"]
    assert "**/*.json" in patterns and "**/*.css" in patterns
    assert (ROOT / "recsys_audit" / "findings_schema.json").is_file()
    assert (ROOT / "recsys_audit" / "report_assets" / "report.css").is_file()
