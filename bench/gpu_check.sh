#!/usr/bin/env bash
# The GPU proof (issue 17), one script for a machine lent with a GPU for a few minutes: it sets up its own
# virtualenv, then runs each check under its own timeout within one overall budget, and writes every figure as a
# markdown fragment ready to paste into bench/RESULTS.md.
#
#   bash bench/gpu_check.sh                  on a GPU machine that can install: .venv set up as .ci/setup does
#   bash bench/gpu_check.sh --cpu --quick    the same steps on the CPU with small shapes (the test suite runs this)
#
# The lent H200 can fetch nothing and has its own python3 with a CUDA torch (2.11 when last seen), so there:
#   1. here, with the package registry reachable:  bash bench/gpu_check.sh --prepare
#      (cp312 wheels of what that machine lacks, at requirements.lock's versions, and MiniLM's config and tokenizer,
#      into .gpu_check/, which git ignores; about 30 MB)
#   2. device `run`, carry [".gpu_check"], timeout_s 560:  bash bench/gpu_check.sh --offline --out $OUT
#      (its python3, the wheels installed into /tmp/vera-site, the project from this folder on PYTHONPATH, MiniLM's
#      architecture with random weights: every check compares ours with PEFT on the same weights)
#
# Options: --cpu (device cpu; what needs CUDA is skipped, saying so), --quick (small shapes), --venv DIR (use this
# virtualenv as it is, no set-up; also VERA_GPU_CHECK_VENV), --offline [--python PY] (no set-up: PY, default python3,
# with .gpu_check/ as above), --prepare [--no-wheels] (make .gpu_check/ and stop), --assets DIR (instead of
# .gpu_check/), --out DIR (default $OUT, else ./gpu_check_out),
# --budget S (seconds for everything, set-up included; default 470, also VERA_GPU_CHECK_BUDGET_S).
# Steps: set-up, device, projection (portable generator on the device = CPU, bit for bit), cuda-tests (pytest -k
# cuda in tests/vera_core: the tests that skip with "needs a CUDA device"), train (ours vs PEFT VeRA vs PEFT LoRA r=8:
# same losses, step time, peak memory), mixed (mixed-adapter batch vs PEFT), decode (continuous batching: rows
# joining mid-flight choose their adapter's tokens; vs generate), serve (vera serve-model --device), worker (vera
# worker --device: trains the job asking for its GPU there, leaves one asking for more queued, refuses a missing
# device; in the full run the same job on a CPU worker publishes the same vectors).
# Output: OUT/gpu_check.md (the fragment), OUT/<step>.md and OUT/<step>.log; with --offline the .md and .log files
# other than the fragment end up in OUT/gpu_check_logs.tar.gz (the device tool brings back at most 8 files from $OUT).
# Exit 0 when every step passed, 1 when one failed or timed out (the fragment says which), 2 on a bad option.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda QUICK="" VENV=${VERA_GPU_CHECK_VENV:-} OUT_DIR=${OUT:-gpu_check_out} BUDGET=${VERA_GPU_CHECK_BUDGET_S:-470}
OFFLINE="" PREPARE="" WHEELS=1 SYSTEM_PY=python3 ASSETS=.gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) DEVICE=cpu ;;
        --quick) QUICK=--quick ;;
        --venv) VENV=${2:?--venv needs a folder}; shift ;;
        --offline) OFFLINE=1 ;;
        --python) SYSTEM_PY=${2:?--python needs an interpreter}; shift ;;
        --prepare) PREPARE=1 ;;
        --no-wheels) WHEELS="" ;;
        --assets) ASSETS=${2:?--assets needs a folder}; shift ;;
        --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (expected --cpu, --quick, --venv DIR, --offline, --python PY," \
                "--prepare, --no-wheels, --assets DIR, --out DIR, --budget S)" >&2
           exit 2 ;;
    esac
    shift
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a whole number of seconds, got '$BUDGET'" >&2
                               exit 2 ;; esac
if [ -n "$VENV" ] && [ ! -x "$VENV/bin/python" ]; then
    echo "gpu_check.sh: --venv $VENV has no bin/python; leave --venv out to set one up in .venv" >&2
    exit 2
fi
# What the GPU machine lacks (it has torch, numpy, safetensors, tokenizers' needs, typer, rich, httpx, fsspec, pytest
# ...: the device README's package list), at the lock's versions: the registry's stack, and the transformers,
# huggingface_hub and peft this project is tested with.
CARRIED="fastapi starlette opentelemetry-api pydantic pydantic_core annotated-types typing-inspection pydantic-settings
python-dotenv uvicorn SQLAlchemy greenlet alembic Mako python-multipart transformers huggingface_hub httpx2 httpcore2
truststore tokenizers peft google-re2 fastapi_offline pybase64 httptools pyjwt"
if [ -n "$PREPARE" ]; then
    mkdir -p "$ASSETS/minilm" || exit 1
    minilm=$(python3 -c "from vera_core.recipes import resolve_base; print(resolve_base('minilm'))" 2>/dev/null \
             || .venv/bin/python -c "from vera_core.recipes import resolve_base; print(resolve_base('minilm'))") || {
        echo "gpu_check.sh --prepare: the demo's MiniLM is not installed here (bash .ci/setup installs it)" >&2; exit 1; }
    for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
        [ -f "$minilm/$f" ] && cp "$minilm/$f" "$ASSETS/minilm/"
    done
    if [ -n "$WHEELS" ]; then
        pins=$(for name in $CARRIED; do grep -i "^${name}==" requirements.lock; done)
        mkdir -p "$ASSETS/wheels" && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$ASSETS/wheels" $pins || exit 1
    fi
    if [ "${ASSETS#/}" = "$ASSETS" ] && git rev-parse --git-dir >/dev/null 2>&1 \
            && ! grep -qsx "/$ASSETS/" "$(git rev-parse --git-dir)/info/exclude"; then  # in the checkout: ignored
        echo "/$ASSETS/" >> "$(git rev-parse --git-dir)/info/exclude"
    fi
    echo "gpu_check.sh --prepare: $(du -sh "$ASSETS" | cut -f1) in $ASSETS/; on the GPU machine: run with" \
         "carry [\"$ASSETS\"] and command: bash bench/gpu_check.sh --offline --out \$OUT"
    exit 0
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
FRAGMENT="$OUT_DIR/gpu_check.md"
START=$SECONDS FAILED=0
bundle() {  # the device tool brings back at most 8 files from $OUT: the fragment and one archive of the rest
    local files
    files=$(cd "$OUT_DIR" && ls -- *.log *.md 2>/dev/null | grep -vx gpu_check.md)
    if [ -n "$files" ]; then (cd "$OUT_DIR" && tar -czf gpu_check_logs.tar.gz $files && rm -f $files); fi
}
[ -n "$OFFLINE" ] && trap bundle EXIT
: > "$OUT_DIR/sections.md"

remaining() { echo $((BUDGET - (SECONDS - START))); }
section() { printf '\n### %s\n\n' "$1" >> "$OUT_DIR/sections.md"; }
note() { printf '%s\n' "$1" >> "$OUT_DIR/sections.md"; echo "gpu_check: $1" >&2; }

# run_step NAME TIMEOUT COMMAND...: the command under min(TIMEOUT, what is left of the budget); its output in
# OUT/NAME.log; a failure or a timeout is a line in the fragment with the log's last lines.
run_step() {
    local name=$1 limit=$2 left rc
    shift 2
    left=$(remaining)
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        note "**$name: not run**: the budget of ${BUDGET} s was spent (rerun with --budget, or only this step)."
        FAILED=1
        return 1
    fi
    echo "gpu_check: $name (at most ${limit} s)" >&2
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note "**$name: TIMED OUT** after ${limit} s; the last lines of $name.log:"
    elif [ "$rc" -ne 0 ]; then
        note "**$name: FAILED** (exit $rc); the last lines of $name.log:"
    fi
    if [ "$rc" -ne 0 ]; then
        { echo '```'; tail -n 15 "$OUT_DIR/$name.log"; echo '```'; } >> "$OUT_DIR/sections.md"
        FAILED=1
    fi
    return "$rc"
}

# ---- set-up: as .ci/setup does, torch pinned first (on a GPU machine pip fetches the CUDA wheel of that version)
section "Set-up"
if [ -n "$OFFLINE" ]; then
    PY=$SYSTEM_PY
    site=/tmp/vera-site
    if ls "$ASSETS"/wheels/*.whl >/dev/null 2>&1; then
        run_step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$ASSETS"/wheels/*.whl && note "carried wheels installed into $site"
    fi
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if [ -d "$ASSETS/minilm" ]; then
        VERA_GPU_CHECK_MINILM=$(cd "$ASSETS/minilm" && pwd)
        export VERA_GPU_CHECK_MINILM
    fi
    note "offline: $("$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}")' \
        2>&1 | tail -n 1), the project from $PWD on PYTHONPATH${VERA_GPU_CHECK_MINILM:+, the MiniLM architecture with random weights}"
elif [ -n "$VENV" ]; then
    PY="$VENV/bin/python"
    note "virtualenv $VENV used as it is (no set-up)"
else
    PY=.venv/bin/python
    setup() {
        [ -x .venv/bin/python ] || python3 -m venv .venv || return 1
        .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 || return 1
        .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[test]"
    }
    export -f setup
    run_step setup 300 bash -c setup && note "virtualenv .venv set up in $((SECONDS - START)) s"
fi
WANT=2.13.0
[ -n "$OFFLINE" ] && WANT=""  # the machine's own torch, whatever its version (the fragment says which)
"$PY" -c "import torch, vera_core, registry; assert torch.__version__.startswith('$WANT'), torch.__version__" \
    >> "$OUT_DIR/setup.log" 2>&1 || { note "**set-up: FAILED**: torch ${WANT:-(any)}, vera_core and registry do not import (setup.log)"
                                     cat "$OUT_DIR/sections.md" > "$FRAGMENT"; exit 1; }

step() {  # step NAME TIMEOUT: one step of bench/gpu_check.py, its markdown section into the fragment
    rm -f "$OUT_DIR/$1.md"
    run_step "$1" "$2" "$PY" bench/gpu_check.py "$1" --device "$DEVICE" $QUICK --out "$OUT_DIR"
    if [ -f "$OUT_DIR/$1.md" ]; then cat "$OUT_DIR/$1.md" >> "$OUT_DIR/sections.md"; fi
}

# ---- device ------------------------------------------------------------------------------------------------------
section "Device"
if [ "$DEVICE" = cuda ]; then
    if command -v nvidia-smi >/dev/null; then
        note "nvidia-smi: $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit \
            --format=csv,noheader 2>&1 | head -n 8 | paste -sd ';')"
    else
        note "nvidia-smi: not found"
    fi
else
    note "--cpu: no GPU asked for; nvidia-smi not run"
fi
step device 60
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    note "**No CUDA device** is visible to torch: every CUDA step would fail. Use --cpu for the CPU run."
    cat "$OUT_DIR/sections.md" > "$FRAGMENT"
    exit 1
fi

section "Projections: the portable generator on the device vs the CPU"
step projection 120

section "CUDA tests"
if run_step cuda-tests 150 "$PY" -m pytest tests/vera_core -k cuda -q -rs -p no:cacheprovider; then :; fi
if [ -f "$OUT_DIR/cuda-tests.log" ]; then
    summary=$(grep -E "^[0-9]+ (passed|skipped|failed)|^=+ .*(passed|skipped|failed|deselected)" \
              "$OUT_DIR/cuda-tests.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    skips=$(grep -c "needs a CUDA device" "$OUT_DIR/cuda-tests.log")
    note "pytest tests/vera_core -k cuda: ${summary:-no summary line (see cuda-tests.log)}"
    if [ "$DEVICE" = cpu ]; then
        note "skipped on the CPU (needs a CUDA device): ${skips} skip lines; those tests run on CUDA."
    fi
fi

section "Training step: ours vs PEFT VeRA vs PEFT LoRA r=8"
step train 240

section "Mixed-adapter batches"
step mixed 120

section "Continuous batching"
step decode 120

section "vera serve-model"
step serve 120

section "vera worker --device"
step worker 150

{
    echo "## bench/gpu_check.sh, $(date -u +%Y-%m-%d): $DEVICE${QUICK:+ (quick shapes)}, $((SECONDS - START)) s in all"
    cat "$OUT_DIR/sections.md"
    [ "$FAILED" = 1 ] && printf '\n**Not every step passed**: see the lines above and the logs.\n'
} > "$FRAGMENT"
rm -f "$OUT_DIR/sections.md"
echo "gpu_check: the fragment for bench/RESULTS.md is $FRAGMENT" >&2
cat "$FRAGMENT"
exit "$FAILED"
