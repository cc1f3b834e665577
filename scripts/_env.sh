# Shared by run.sh and test.sh: a virtual environment in .venv with the project installed.
# Debian's Python refuses system-wide pip installs (PEP 668), so everything goes into .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    # Install the Debian packages named in "$@" that are not installed yet.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

ensure_venv() {
    # Install the project ("$1": "." or ".[test]") into .venv once; later calls start at once,
    # without pip or a package index, until pyproject.toml changes (its hash is kept in a stamp
    # file per spec). The test install is a superset, so it stamps "." too.
    local want stamp
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    stamp=".venv/.pbx-installed-$(printf '%s' "$1" | tr -c 'a-z' '_')"
    if [ -x .venv/bin/pbx ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    # Without Debian's python3-venv, `python3 -m venv` leaves a .venv with no pip behind:
    # judge the venv by a working pip, not by the interpreter's presence.
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv
        python3 -m venv .venv 2>/dev/null || {
            rm -rf .venv
            apt_install python3-venv
            python3 -m venv .venv
        }
    fi
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e "$1"
    echo "$want" >"$stamp"
    if [ "$1" = ".[test]" ]; then echo "$want" >".venv/.pbx-installed-_"; fi
}
