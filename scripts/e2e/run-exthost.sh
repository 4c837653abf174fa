#!/usr/bin/env bash
# Extension-host integration tests: Mocha inside code-server's (Node) extension host, loaded through
# the smoke-test driver's ?payload= (guide pitfall 7). The extension under test is the unpacked .vsix,
# so these tests see exactly what users install (dist bundles + the linux-x64 onnxruntime-node).
# Usage: bash scripts/e2e/run-exthost.sh <lopro.vsix> <compiled-tests-dir>
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
E2E_ROOT=${E2E_ROOT:-$REPO/.cache/e2e}
. scripts/e2e/lib.sh
VSIX=$(realpath "$1"); TESTS=$(realpath "$2"); PORT=${PORT:-8766}
W=$(mktemp -d /tmp/lopro-exthost-XXXX)
cs_prepare "$W" "$PORT"
mkdir -p "$W/ws" "$W/unzip"
cp -r fixtures/tiny "$W/ws/tiny"
cp fixtures/text/persuasion.txt "$W/ws/calib.txt"
# A short held-out text for perplexity after runs and for the export checks (keeps them to seconds).
head -c 30000 fixtures/text/jargon_tail.txt > "$W/ws/eval.txt"
mkdir -p "$W/ws/.vscode"
printf '{ "lopro.evalText": "%s" }\n' "$W/ws/eval.txt" > "$W/ws/.vscode/settings.json"
unzip -q "$VSIX" 'extension/*' -d "$W/unzip" && mv "$W/unzip/extension" "$W/ext"
# The tests need mocha at run time: resolve it from the repo's node_modules.
export NODE_PATH="$REPO/node_modules"
export EXT_TEST_RESULTS="$W/results.json"     # the extension host inherits code-server's environment
rc=1
cleanup() { cs_stop; if [ "$rc" -eq 0 ]; then rm -rf "$W"; else echo "kept $W (code-server.log, data/logs)"; fi; }
trap cleanup EXIT
t0=$(ms)
cs_start "$W" "$PORT" "$W/ws" --vscode-option enable-smoke-test-driver
rc=0
EXT_TEST_TIMEOUT_MS=${EXT_TEST_TIMEOUT_MS:-600000} NODE_PATH="$E2E_ROOT/pw/node_modules" node scripts/e2e/exthost-driver.js "http://127.0.0.1:$PORT" "$W/ws" "$W/ext" "$TESTS/index" \
  | grep -vE '^\[(AgentHost|ChatModelSelection)' || rc=${PIPESTATUS[0]}
echo "TIMING ext-host tests (server start + run): $(( $(ms) - t0 )) ms"
if [ -f "$EXT_TEST_RESULTS" ]; then
  node -e 'const r=require(process.argv[1]);for(const t of r.results)if(t.state!=="passed")console.log("FAILED:",t.title,"\n ",t.err);console.log(`${r.stats.passes} passed, ${r.stats.failures} failed`)' "$EXT_TEST_RESULTS"
  cp "$EXT_TEST_RESULTS" "${EXTHOST_RESULTS_COPY:-/dev/null}" 2>/dev/null || true
else echo "no results file (the extension host never ran the tests?)"; echo "0 passed, 1 failed"; rc=1; fi
exit $rc
