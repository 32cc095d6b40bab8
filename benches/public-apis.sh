#!/usr/bin/env bash
# Real APIs' protos through the transcoder: downloads googleapis' protos as the npm registry
# serves them (google-proto-files, pinned by version and checksum), compiles each API below at
# start with `gwbench gateway --check --proto` (no protoc) and prints, per API, its annotated
# RPCs, the routes served and every rule skipped with the reason; then writes each API's OpenAPI
# document (`gateway --openapi`) and validates it with openapi-spec-validator (PyPI), printing
# its operations, size and the verdict. Nothing listens; nothing is checked in.
#
#   bash benches/public-apis.sh                       # the default list below
#   APIS="google/pubsub/v1/pubsub.proto" bash benches/public-apis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=6.0.1
SHA1=00f1bada0a457cafd5613359d84feb088b2883e3
APIS=${APIS:-"google/cloud/compute/v1/compute.proto
google/container/v1/cluster_service.proto
google/spanner/admin/database/v1/spanner_database_admin.proto
google/pubsub/v1/pubsub.proto
google/firestore/v1/firestore.proto
google/cloud/aiplatform/v1/dataset_service.proto
google/bigtable/admin/v2/bigtable_table_admin.proto
google/example/library/v1/library.proto"}

python3 -c "import openapi_spec_validator" 2>/dev/null \
  || python3 -m pip install -q openapi-spec-validator >/dev/null 2>&1 \
  || { echo "missing: python3 with openapi-spec-validator (pip install openapi-spec-validator)" >&2; exit 2; }
for tool in curl tar sha1sum; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
cargo build --release --quiet
GW=$PWD/target/release/gwbench

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsS -o "$work/protos.tgz" \
  "https://registry.npmjs.org/google-proto-files/-/google-proto-files-$VERSION.tgz"
echo "$SHA1  $work/protos.tgz" | sha1sum -c --quiet
tar xzf "$work/protos.tgz" -C "$work"
root=$work/package
cat > "$work/validate.py" <<'PY'
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
d, _ = read_from_filename(sys.argv[1])
validate(d)
ops = sum(len(v) for v in d["paths"].values())
ws, lost = len(d.get("x-websocket", [])), len(d.get("x-undocumented", []))
print(f"{ops} operations + {ws} WebSocket-only, {lost} undocumented, valid OpenAPI {d['openapi']}")
PY

# The default config with one mount and no aggregation: each annotated rule is one route.
"$GW" gateway --print-default-config | python3 -c '
import sys, re
blocks, cur = [], []
for line in sys.stdin:
    if line.startswith("[") and cur:
        blocks.append(cur); cur = []
    cur.append(line)
blocks.append(cur)
for b in blocks:
    head, text = b[0].strip(), "".join(b)
    if head.startswith("[[aggregations") or (head == "[[transcode.mounts]]" and not re.search(r"prefix = \"\"", text)):
        continue
    sys.stdout.write(text)
' > "$work/gw.toml"

printf '%-62s %6s %7s %8s  %s\n' "api (google-proto-files $VERSION)" rpcs routes skipped \
  "openapi: operations, validation, size"
total_routes=0 total_skipped=0
for api in $APIS; do
  rpcs=$(grep -cE '^\s*rpc ' "$root/$api" || true)
  set +e
  (cd "$root" && "$GW" gateway --config "$work/gw.toml" --check --proto "$api" -I .) \
    > "$work/out" 2> "$work/err"
  code=$?
  set -e
  if [ "$code" -eq 2 ]; then
    printf '%-62s %6s  failed: %s\n' "$api" "$rpcs" "$(head -1 "$work/err")"
    continue
  fi
  routes=$(grep -c '^transcode' "$work/out" || true)
  skipped=$(grep -c '^skipped' "$work/out" || true)
  doc=$work/$(basename "$api" .proto).openapi.json
  verdict="--openapi failed"
  if (cd "$root" && "$GW" gateway --config "$work/gw.toml" --openapi "$doc" --proto "$api" -I .) \
    2> "$work/err"; then
    verdict="$(python3 "$work/validate.py" "$doc" 2>&1 | tail -1), $(wc -c < "$doc") bytes"
  fi
  printf '%-62s %6s %7s %8s  %s\n' "$api" "$rpcs" "$routes" "$skipped" "$verdict"
  grep '^skipped' "$work/out" | sed 's/^/    /' || true
  total_routes=$((total_routes + routes)) total_skipped=$((total_skipped + skipped))
done
echo "total: $total_routes routes served, $total_skipped rules skipped"
