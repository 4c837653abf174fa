#!/bin/bash
# The authors' preset and each of its levers alone against today's defaults (issue 17 item 7), one run after the
# other on this machine: `bash bench/preset_levers.sh MODEL_DIR TAG 'name|--flag v ...' ...`. Each run quantizes
# MODEL_DIR with the protocol calibration and evaluates persuasion and jargon_tail (perplexity and KL from the
# float model); the lines that matter go to bench/out/TAG/summary.txt, the whole logs beside it.
# The engine is a copy of dist/ taken at the start, so that a rebuild meanwhile does not change a run (ENGINE=DIR:
# an engine built elsewhere, e.g. an experiment's).
set -u
MODEL=$1 TAG=$2
shift 2
OUTD=bench/out/$TAG
SNAP=${ENGINE:-.scratch/snap-$TAG}
mkdir -p "$OUTD" .scratch
[ -n "${ENGINE:-}" ] || { rm -rf "$SNAP" && cp -r dist "$SNAP"; }
for spec in "$@"; do
  name=${spec%%|*} args=${spec#*|}
  t0=$(date +%s)
  # shellcheck disable=SC2086
  node "$SNAP/engine.js" quantize "$MODEL" --calib fixtures/text/train.txt --out "/tmp/pl-$TAG-$name" \
    --eval fixtures/text/persuasion.txt --eval fixtures/text/jargon_tail.txt $args > "$OUTD/$name.log" 2>&1
  rc=$?
  { echo "== $name ($args) rc $rc $(( $(date +%s) - t0 )) s $(date -u +%FT%TZ)"
    grep -E "bits/weight|bpw|perplexity|KL|ppl" "$OUTD/$name.log" | tail -8; } >> "$OUTD/summary.txt"
done
