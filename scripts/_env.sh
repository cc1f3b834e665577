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
}
