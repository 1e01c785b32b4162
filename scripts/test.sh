#!/usr/bin/env bash
# The whole test suite, from a fresh clone: in the active venv, or else in the repository's .venv/
# (made with the first supported Python found: scripts/python_env.sh; never the system Python),
# install the package with its test, ray and bf16 extras (and Chromium for the report tests), lint, test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
use_project_venv scripts/test.sh
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,ray,bf16]"
# The report tests open the HTML report in a headless Chromium, with a CJK font for the labels.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null \
    || echo "scripts/test.sh: could not install chromium; the report's browser tests will be skipped" >&2
fi
"$PY" -m ruff check .
"$PY" -m pytest -q "$@"
