#!/usr/bin/env bash
# Does the API answer only what its OpenAPI document says? Serves the control plane on a fresh SQLite file and runs
# `schemathesis run` against it (response schema, status code and content type conformance), printing its summary.
#   bench/openapi_conformance.sh [SCHEMATHESIS] [SOURCE_DIR]
# SCHEMATHESIS: the schemathesis executable (not a dependency of the project: `pip install schemathesis==4.32.5`
# into a venv of its own). SOURCE_DIR: the tree to serve (default: this checkout; an export of another commit to
# compare). Needs this checkout's .venv. Fixed seed and example count, so two runs are comparable. CHECKS and
# MAX_EXAMPLES override the checks and the examples per operation.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
schemathesis=${1:-schemathesis}
source_dir=${2:-$here}
work=$(mktemp -d)
port=${PORT:-18431}
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
export CONTROLPLANE_DATABASE_URL="sqlite:///$work/controlplane.db" CONTROLPLANE_DEFINITIONS_DIR="$source_dir/definitions"
# Generous limits: the run is about what each route answers, not about being throttled.
export CONTROLPLANE_RATE_LIMIT_PER_MINUTE=1000000 CONTROLPLANE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE=1000000
export CONTROLPLANE_SCHEDULER_ENABLED=false
PYTHONPATH="$source_dir" "$here/.venv/bin/python" -m controlplane.cli serve --port "$port" >token 2>server.log &
server=$!
for _ in $(seq 100); do grep -q . token 2>/dev/null && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
token=$(head -1 token)
"$schemathesis" run "http://127.0.0.1:$port/schema/openapi.json" \
  --checks "${CHECKS:-response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance}" \
  -H "Authorization: Bearer $token" -H "X-Environment: production" \
  --phases examples,coverage,fuzzing --max-examples "${MAX_EXAMPLES:-30}" --seed 1 --workers 1 --continue-on-failure \
  --exclude-path-regex "/stream$" --no-color 2>&1 || true
