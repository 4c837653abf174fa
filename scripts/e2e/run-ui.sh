#!/usr/bin/env bash
# UI e2e: install the .vsix into a fresh code-server, open a workspace with a copy of fixtures/tiny
# and the calibration text, and drive it with Playwright (scripts/e2e/ui.e2e.js).
# Usage: bash scripts/e2e/run-ui.sh <lopro.vsix>     (E2E_ROOT from setup.sh; PORT optional)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
E2E_ROOT=${E2E_ROOT:-$REPO/.cache/e2e}
. scripts/e2e/lib.sh
VSIX=$(realpath "$1"); PORT=${PORT:-8765}
SHOTS=${SHOTS:-$REPO/test/e2e/artifacts}
rm -f "$SHOTS"/*.png "$SHOTS"/ui-results.json   # only this run's artefacts
W=$(mktemp -d /tmp/lopro-ui-XXXX)
cs_prepare "$W" "$PORT"
mkdir -p "$W/ws"
cp -r fixtures/tiny "$W/ws/tiny"
cp -r fixtures/arch/mixtralt "$W/ws/mixtralt"
cp fixtures/text/train.txt "$W/ws/train.txt"
# A short held-out text (first 30 kB of persuasion.txt): the run's perplexity and the export check use it.
head -c 30000 fixtures/text/persuasion.txt > "$W/ws/eval.txt"
mkdir -p "$W/ws/.vscode"
printf '{ "lopro.evalText": "%s" }\n' "$W/ws/eval.txt" > "$W/ws/.vscode/settings.json"
t0=$(ms)
PATH="$N24/bin:$PATH" "$CS" --config "$W/config.yaml" --user-data-dir "$W/data" --extensions-dir "$W/exts" --install-extension "$VSIX" | tail -1
echo "TIMING install-extension: $(( $(ms) - t0 )) ms"
rc=1
cleanup() { cs_stop; if [ "$rc" -eq 0 ]; then rm -rf "$W"; else echo "kept $W (code-server.log, data/logs)"; fi; }
trap cleanup EXIT
cs_start "$W" "$PORT" "$W/ws"
rc=0
NODE_PATH="$E2E_ROOT/pw/node_modules" node scripts/e2e/ui.e2e.js "http://127.0.0.1:$PORT" "$W/ws" "$SHOTS" || rc=$?
if [ $rc -ne 0 ]; then
  echo "--- engine/extension log:"; find "$W/data/logs" -name '*LoPRo*' -exec tail -40 {} \; 2>/dev/null || true
fi
exit $rc
