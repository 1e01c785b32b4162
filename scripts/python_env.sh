# Sourced by scripts/test.sh, scripts/demo.sh and scripts/smoke_python.sh (bash): which Pythons
# paddlehub-video supports, how to find one, and the project's venv.
#
#   use_project_venv NAME   inside an active venv (VIRTUAL_ENV set), use it; otherwise use the
#                           repository's .venv/, made first with first_supported_python (python3
#                           if supported, then the newest of 3.12, 3.11, 3.10 as python3.X on PATH
#                           or in pyenv). Never installs into a system Python. Sets PY and puts
#                           the venv's bin/ first on PATH (so `hub` is the venv's). NAME prefixes
#                           every message.
#   find_python X.Y         prints a working python X.Y that can make a venv, or fails.

# Keep in step with setup.py's python_requires (tests/test_python_versions.py checks). 3.13 cannot
# work (README, "Which Pythons"): paddlehub imports paddle2onnx, which has no 3.13 wheel.
SUPPORTED_PYTHONS=(3.10 3.11 3.12)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# X.Y of interpreter $1, if it runs.
python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

is_supported() {
    local v
    for v in "${SUPPORTED_PYTHONS[@]}"; do [[ "$v" == "$1" ]] && return 0; done
    return 1
}

supported_list() {  # "3.10, 3.11 or 3.12"
    local n=${#SUPPORTED_PYTHONS[@]}
    local IFS=,
    local head="${SUPPORTED_PYTHONS[*]:0:n-1}"
    echo "${head//,/, } or ${SUPPORTED_PYTHONS[n-1]}"
}

# pyenv's installs of X.Y, newest first (pyenv's shims run only the versions it is set to).
pyenv_pythons() {
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
    [[ -d "$root/versions" ]] || return 0
    ls -d "$root/versions/$1".*/bin/"python$1" 2>/dev/null | sort -V -r || true
}

# Prints the real executable of interpreter $1 if it runs Python X.Y ($2) and can make a venv
# (Debian's python3 cannot until python3-venv is installed: NO_VENV_MODULE then names it).
NO_VENV_MODULE=""
venv_capable() {
    [[ -n "$1" && "$(python_version "$1")" == "$2" ]] || return 1
    if "$1" -c 'import ensurepip, venv, sys; print(sys.executable)' 2>/dev/null; then
        return 0
    fi
    NO_VENV_MODULE="$1"
    return 1
}

# A working python X.Y that can make a venv: python3.X on PATH, else pyenv's newest X.Y.
find_python() {
    local cand
    for cand in "$(command -v "python$1" 2>/dev/null)" $(pyenv_pythons "$1"); do
        venv_capable "$cand" "$1" && return 0
    done
    return 1
}

# The first supported Python: python3 if it is one, then the newest supported python3.X.
first_supported_python() {
    local v i
    if v="$(python_version python3)" && is_supported "$v"; then
        venv_capable "$(command -v python3)" "$v" && return 0
    fi
    for ((i = ${#SUPPORTED_PYTHONS[@]} - 1; i >= 0; i--)); do
        find_python "${SUPPORTED_PYTHONS[i]}" && return 0
    done
    return 1
}

use_project_venv() {
    local name=$1 venv v base
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then
        PY="$VIRTUAL_ENV/bin/python"
        if ! v="$(python_version "$PY")"; then
            echo "$name: the active venv ($VIRTUAL_ENV) has no working bin/python" >&2
            exit 1
        fi
        if ! is_supported "$v"; then
            echo "$name: the active venv ($VIRTUAL_ENV) runs Python $v; paddlehub-video needs $(supported_list) (README, \"Which Pythons\"): deactivate it (this script then makes .venv/) or activate one of those" >&2
            exit 1
        fi
        echo "$name: using the active venv $VIRTUAL_ENV (Python $("$PY" -c 'import platform; print(platform.python_version())'))" >&2
        export PATH="$VIRTUAL_ENV/bin:$PATH"  # its `hub`, even when VIRTUAL_ENV was set without activating
        hash -r
        return 0
    fi
    venv="$REPO_ROOT/.venv"
    if v="$(python_version "$venv/bin/python")" && is_supported "$v"; then
        echo "$name: using $venv (Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'))" >&2
    else
        if [[ -e "$venv" ]]; then
            echo "$name: $venv does not run a supported Python; making it anew" >&2
            rm -rf "$venv"
        fi
        if ! base="$(first_supported_python)"; then
            local why=""
            [[ -n "$NO_VENV_MODULE" ]] && why="; $NO_VENV_MODULE lacks the venv module (Debian/Ubuntu: apt-get install python3-venv)"
            echo "$name: no Python $(supported_list) found (python3 is $(python_version python3 || echo missing); tried python3.X on PATH and pyenv)$why: install one, or activate a venv of one" >&2
            exit 1
        fi
        "$base" -m venv "$venv"
        echo "$name: made $venv with Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())') ($base)" >&2
    fi
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
    unset PYTHONHOME
    hash -r
    PY="$venv/bin/python"
}
