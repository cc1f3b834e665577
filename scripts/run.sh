#!/usr/bin/env bash
# Install what the server needs and run it on the demo configuration in config/.
source "$(dirname "$0")/_env.sh"
ensure_venv .
exec .venv/bin/pbx run --config config/pbx.toml "$@"
