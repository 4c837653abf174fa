#!/bin/bash
# The issue-4 table rows still missing after the first device session, one model_table process per
# row, PARALLEL at a time (each ORT CPU EP with LOPRO_ORT_THREADS threads for the calibration
# forwards; perplexity on --eval-ep). Run dirs live in /tmp/mt/runs (kept while the machine is warm),
# so a second call of this script resumes unfinished runs and skips finished rows.
#   bash bench/device/table_jobs.sh [PARALLEL=14] [TIMEOUT_S=540]
# Needs /tmp/l/node, /tmp/l/o130/node_modules, /tmp/l/models/{base,small} (bench/device/README.md).
set -u
P=${1:-14}; T=${2:-540}
export LOPRO_ORT_DIR=/tmp/l/o130/node_modules LOPRO_ORT_THREADS=${LOPRO_ORT_THREADS:-1}
mkdir -p "$OUT/jobs" /tmp/mt/runs
jobs() { # name | model | methods | bits | rows filter
cat <<'J'
b_lopro_v_w2_budget base lopro_v 2 budget
b_lopro_v_w3 base lopro_v 3 plain
b_lopro_v_w3_budget base lopro_v 3 budget
s_lopro_v_w2 small lopro_v 2 plain
s_lopro_v_w2_budget small lopro_v 2 budget
s_lopro_v_w3 small lopro_v 3 plain
s_lopro_v_w3_budget small lopro_v 3 budget
b_lopro_w3 base lopro 3 plain
b_lopro_w3_budget base lopro 3 budget
b_lopro_mse_w2_budget base lopro:mse 2 budget
b_lopro_mse_w3_budget base lopro:mse 3 budget
b_gptq_w3 base gptq 3 plain
b_gptq_mse_w2 base gptq:mse 2 plain
b_gptq_mse_w3 base gptq:mse 3 plain
b_rtn_w3 base rtn 3 plain
s_lopro_w2 small lopro 2 plain
s_lopro_w2_budget small lopro 2 budget
s_lopro_w3 small lopro 3 plain
s_lopro_w3_budget small lopro 3 budget
s_lopro_mse_w2_budget small lopro:mse 2 budget
s_lopro_mse_w3_budget small lopro:mse 3 budget
s_gptq_w2 small gptq 2 plain
s_gptq_w3 small gptq 3 plain
s_gptq_mse_w2 small gptq:mse 2 plain
s_gptq_mse_w3 small gptq:mse 3 plain
s_rtn_w2 small rtn 2 plain
s_rtn_w3 small rtn 3 plain
s_fp small fp 0 plain
J
}
run1() {
  set -- $1
  local name=$1 model=$2 methods=$3 bits=$4 rows=$5 extra=""
  [ "$methods" = fp ] && extra="" || extra="--bits $bits --rows $rows"
  timeout "$T" /tmp/l/node .gpu/bench/model_table.js --ep cpu --eval-ep "${EVAL_EP:-webgpu}" --models-dir /tmp/l/models --models "$model" \
    --methods "$methods" $extra --out "$OUT/jobs/$name" --runs-dir /tmp/mt/runs --resume > "$OUT/jobs/$name.log" 2>&1
  echo "$(date +%T) $name rc=$? $(grep -o 'bpw.*ppl.*' "$OUT/jobs/$name.log" | tail -1)"
}
export -f run1; export T OUT
jobs | xargs -P "$P" -I{} bash -c 'run1 "{}"'
