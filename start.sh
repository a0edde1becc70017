#!/usr/bin/env bash
# Start the gateway: creates .venv, installs, migrates the database, creates a first API key if
# there is none (printed once, with a curl example) and serves on http://127.0.0.1:8080. It records
# the data directory (serve --remember) so later `aistats-gateway keys …` commands use the same one.
# Extra flags go to `aistats-gateway serve` (e.g. ./start.sh --port 9000 --data-dir /srv/gw).
set -euo pipefail
source "$(dirname "$0")/scripts/bootstrap.sh"
exec .venv/bin/aistats-gateway serve --bootstrap-key --remember "$@"
