#!/usr/bin/env bash
# All tests: type check, lint + format check (Biome), build, unit + golden + integration (node:test), then the real-VS-Code suites
# (extension-host Mocha and the Playwright UI e2e in code-server). Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
npm run -s typecheck
npx biome ci src webview test bench scripts
npm run -s build
# The GPU backend's kernels run on SwiftShader here; LOPRO_REQUIRE_DAWN=1 makes a missing device a failure.
bash scripts/setup-swiftshader.sh
LOPRO_REQUIRE_DAWN=1 npm run -s test:unit
if [ -z "${LOPRO_SKIP_VSCODE_TESTS:-}" ]; then bash scripts/e2e/run-all.sh; fi
echo "all test suites finished in $(( $(date +%s) - t0 )) s"
