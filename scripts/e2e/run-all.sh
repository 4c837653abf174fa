#!/usr/bin/env bash
# The real-VS-Code suites, from a fresh machine: install the bench (setup.sh), build, package the
# .vsix, then (a) extension-host Mocha tests and (b) the Playwright UI e2e in code-server.
# Prints the .vsix size, each suite's "N passed, M failed" and the total. Called by scripts/test-all.sh.
# Env: E2E_ROOT (default .cache/e2e), LOPRO_E2E_SKIP_BUILD=1 (dist/ already built), LOPRO_E2E_ONLY=ui|exthost.
set -euo pipefail
# Under `npm test` the parent npm exports npm_config_* (user agent "node/v20", nodedir ...): the nested
# installs would inherit them, and code-server's postinstall refuses a non-Node-24 user agent.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(npm_[A-Za-z0-9_]*\)=.*/\1/p')
cd "$(dirname "$0")/../.."
REPO=$PWD
export E2E_ROOT=${E2E_ROOT:-$REPO/.cache/e2e}
t0=$(date +%s)
bash scripts/e2e/setup.sh
[ -n "${LOPRO_E2E_SKIP_BUILD:-}" ] || node scripts/build.mjs --production
for f in dist/extension.js dist/engine.js dist/webview.js; do [ -f "$f" ] || { echo "missing $f: build first"; exit 1; }; done
node --import tsx scripts/e2e/gen-contributes.ts --check

VSIX="$E2E_ROOT/lopro.vsix"
rm -f "$VSIX"
npx vsce package --allow-missing-repository --skip-license --no-rewrite-relative-links -o "$VSIX" 2>&1 | grep -vE '^\s*$' | tail -5
echo "VSIX size: $(stat -c %s "$VSIX") bytes ($(du -h "$VSIX" | cut -f1)); files: $(unzip -l "$VSIX" | tail -1 | awk '{print $2}')"

node scripts/e2e/build-exthost.mjs "$E2E_ROOT/exthost-out"
pass=0; fail=0; rc=0
count() { local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$1" | tail -1); [ -n "$line" ] || line="0 passed, 1 failed"
  pass=$((pass + ${line%% passed*})); local f=${line#*, }; fail=$((fail + ${f%% failed*})); }
if [ "${LOPRO_E2E_ONLY:-exthost}" = exthost ] || [ -z "${LOPRO_E2E_ONLY:-}" ]; then
  echo "=== extension-host integration tests (Mocha in code-server) ==="
  bash scripts/e2e/run-exthost.sh "$VSIX" "$E2E_ROOT/exthost-out" 2>&1 | tee "$E2E_ROOT/exthost.log" || rc=1
  count "$E2E_ROOT/exthost.log"
fi
if [ "${LOPRO_E2E_ONLY:-ui}" = ui ] || [ -z "${LOPRO_E2E_ONLY:-}" ]; then
  echo "=== UI e2e (Playwright + chromium in code-server) ==="
  bash scripts/e2e/run-ui.sh "$VSIX" 2>&1 | tee "$E2E_ROOT/ui.log" || rc=1
  count "$E2E_ROOT/ui.log"
fi
echo "real-VS-Code suites finished in $(( $(date +%s) - t0 )) s"
echo "$pass passed, $fail failed"
exit $rc
