"""Which Pythons: setup.py's python_requires, the scripts' list (scripts/python_env.sh) and how the
scripts pick an interpreter (the active venv, else .venv/ made with a supported Python, never the
system one) or stop with one line when there is none."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "scripts" / "python_env.sh"
TOOLS = ("dirname", "ls", "sort", "rm")  # what the helper runs besides Python
THIS = f"{sys.version_info[0]}.{sys.version_info[1]}"


def python_requires() -> SpecifierSet:
    match = re.search(r'python_requires="([^"]+)"', (REPO / "setup.py").read_text(encoding="utf-8"))
    assert match, "setup.py has no python_requires"
    return SpecifierSet(match.group(1))


def script_versions() -> list[str]:
    match = re.search(r"^SUPPORTED_PYTHONS=\(([^)]*)\)", HELPER.read_text(encoding="utf-8"), re.M)
    assert match, "scripts/python_env.sh has no SUPPORTED_PYTHONS"
    return match.group(1).split()


def test_scripts_support_exactly_what_setup_py_allows():
    allowed = [f"3.{minor}" for minor in range(6, 20) if f"3.{minor}.0" in python_requires()]
    assert script_versions() == allowed
    assert THIS in allowed  # the suite itself runs on a supported Python


def test_readme_names_the_supported_versions():
    quick_start = (REPO / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1][:3000]
    for version in script_versions():
        assert version in quick_start


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the helper in a repository of its own, and an environment whose PATH holds only the
    tools it needs and the interpreters a test links into bin/ (no pyenv, no active venv)."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    shutil.copy(HELPER, tmp_path / "repo" / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path / "home"), "PYENV_ROOT": str(tmp_path / "no-pyenv"),
           "LANG": "C.UTF-8"}
    return tmp_path, env


def use_project_venv(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = 'source repo/scripts/python_env.sh && use_project_venv check && echo "PY=$PY VIRTUAL_ENV=$VIRTUAL_ENV"'
    return subprocess.run(["/bin/bash", "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def link_python(sandbox: tuple[Path, dict[str, str]], name: str, target: str) -> None:
    os.symlink(target, sandbox[0] / "bin" / name)


def test_no_supported_python_is_one_line_naming_the_versions(sandbox):
    root, env = sandbox
    # python3 is an unsupported version (a stand-in that answers the helper's version question as
    # 3.13 would), there is no python3.X, and no pyenv.
    fake = root / "bin" / "python3"
    fake.write_text("#!/bin/sh\necho 3.13\n")
    fake.chmod(0o755)
    proc = use_project_venv(root, env)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("check: no Python 3.10, 3.11 or 3.12 found (python3 is 3.13;"), lines
    assert not (root / "repo" / ".venv").exists()


def test_an_active_venv_of_an_unsupported_python_is_refused_in_one_line(sandbox, tmp_path):
    root, env = sandbox
    venv = tmp_path / "old-venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text('#!/bin/sh\necho "3.9"\n')  # answers the helper's version question as 3.9 would
    fake.chmod(0o755)
    proc = use_project_venv(root, {**env, "VIRTUAL_ENV": str(venv)})
    assert proc.returncode == 1, proc
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "runs Python 3.9; paddlehub-video needs 3.10, 3.11 or 3.12" in proc.stderr


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the suite runs outside a venv")
def test_an_active_supported_venv_is_used_as_it_is(sandbox):
    root, env = sandbox
    venv = Path(sys.prefix)
    proc = use_project_venv(root, {**env, "VIRTUAL_ENV": str(venv)})
    assert proc.returncode == 0, proc
    assert f"PY={venv}/bin/python VIRTUAL_ENV={venv}" in proc.stdout
    assert not (root / "repo" / ".venv").exists()


def test_outside_a_venv_a_project_venv_is_made_with_a_supported_python_then_reused(sandbox):
    root, env = sandbox
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter this venv was made from
    link_python(sandbox, f"python{THIS}", base)
    proc = use_project_venv(root, env)
    assert proc.returncode == 0, proc
    venv = root / "repo" / ".venv"
    assert f"PY={venv}/bin/python VIRTUAL_ENV={venv}" in proc.stdout
    assert f"check: made {venv} with Python {sys.version.split()[0]}" in proc.stderr
    again = use_project_venv(root, env)
    assert again.returncode == 0 and f"check: using {venv} (Python" in again.stderr, again
