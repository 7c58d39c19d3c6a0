#!/usr/bin/env bash
# The demo: install what is missing, start the local stack, and follow one Bahmni Save all the
# way to a claim in openIMIS and a row in the iclm_* billing tables. The stack stays up
# afterwards (`.venv/bin/cdc-dev down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/cdc-dev demo "$@"
