#!/usr/bin/env bash
# Commit only the given paths, safely while several people work in this checkout at once.
# Usage: scripts/commit.sh "message" path [path ...]
set -euo pipefail
msg=$1; shift
exec 9>/tmp/lopro-git.lock
flock 9
git add -A -- "$@"
if git diff --cached --quiet -- "$@"; then echo "nothing to commit in: $*"; exit 0; fi
git commit -q -m "$msg" -- "$@"
git log --oneline -1
