#!/usr/bin/env bash
# The whole test suite, from a fresh clone: install the package with its test and ray extras, lint, test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,ray]"
python3 -m ruff check .
python3 -m pytest -q "$@"
