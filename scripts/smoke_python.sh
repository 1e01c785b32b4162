#!/usr/bin/env bash
# Smoke run of the other supported Pythons. For each: a fresh venv (in a temporary folder), the
# install with constraints.txt and the test extra, then tests/test_hub_cli.py's install test: `hub
# install` of both modules, `hub run` of each on a generated clip with seeded weights served from
# 127.0.0.1, and the Python API, whose classify results must match the main interpreter's to 1e-5.
#
#   bash scripts/smoke_python.sh [--reference FILE] [X.Y ...]
#
# --reference FILE: the main interpreter's results, as that test writes them when
#   PADDLEHUB_VIDEO_SMOKE_RESULT=FILE (.ci/run has scripts/test.sh write it). Without it, the test is
#   first run with the main interpreter (the venv scripts/test.sh uses) to make one.
# X.Y: the versions to try; by default every supported one but the main interpreter's.
# Exits 1 when any of them cannot be found, installed or tested; the end says how each went.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
SMOKE_TEST=tests/test_hub_cli.py::test_install_then_run_both_and_load_by_name_from_another_directory
PIP_INSTALL=(-m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]")

reference=""
if [[ "${1:-}" == "--reference" ]]; then
    reference=${2:?"smoke: --reference needs a file"}
    shift 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

use_project_venv smoke
main="$("$PY" -c 'import platform; print(platform.python_version())')"
if [[ -z "$reference" ]]; then
    reference="$work/reference.json"
    echo "smoke: the main interpreter's results (Python $main)" >&2
    "$PY" "${PIP_INSTALL[@]}"
    PADDLEHUB_VIDEO_SMOKE_RESULT="$reference" "$PY" -m pytest -q "$SMOKE_TEST"
elif [[ ! -s "$reference" ]]; then
    echo "smoke: the main interpreter's results $reference are missing (did its test run?)" >&2
    exit 1
fi

versions=("$@")
if ((${#versions[@]} == 0)); then
    for v in "${SUPPORTED_PYTHONS[@]}"; do
        [[ "$v" == "${main%.*}" ]] || versions+=("$v")
    done
fi

failed=()
report=()
for v in "${versions[@]}"; do
    if ! base="$(find_python "$v")"; then
        report+=("Python $v: not found (python$v on PATH, pyenv)")
        failed+=("$v")
        continue
    fi
    full="$("$base" -c 'import platform; print(platform.python_version())')"
    echo "smoke: Python $full ($base): fresh venv, install" >&2
    venv="$work/venv-$v"
    start=$SECONDS
    if ! { "$base" -m venv "$venv" && "$venv/bin/python" "${PIP_INSTALL[@]}"; }; then
        report+=("Python $full: install failed after $((SECONDS - start)) s")
        failed+=("$v")
        continue
    fi
    installed=$((SECONDS - start))
    start=$SECONDS
    echo "smoke: Python $full: hub install, hub run, classify against Python $main" >&2
    if PADDLEHUB_VIDEO_SMOKE_REFERENCE="$reference" "$venv/bin/python" -m pytest -q "$SMOKE_TEST"; then
        report+=("Python $full: passed (install $installed s, test $((SECONDS - start)) s)")
    else
        report+=("Python $full: test failed (install $installed s, test $((SECONDS - start)) s)")
        failed+=("$v")
    fi
    rm -rf "$venv"
done

printf 'smoke: %s\n' "${report[@]}" >&2
if ((${#failed[@]})); then
    echo "smoke: failed on Python ${failed[*]}" >&2
    exit 1
fi
echo "smoke: every Python tried agrees with Python $main" >&2
