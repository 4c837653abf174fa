#!/usr/bin/env bash
# All tests: type check, build, unit + golden + integration (node:test), then the real-VS-Code suites
# (extension-host Mocha and the Playwright UI e2e in code-server). Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
npm run -s typecheck
npm run -s build
npm run -s test:unit
if [ -z "${LOPRO_SKIP_VSCODE_TESTS:-}" ]; then bash scripts/e2e/run-all.sh; fi
echo "all test suites finished in $(( $(date +%s) - t0 )) s"
