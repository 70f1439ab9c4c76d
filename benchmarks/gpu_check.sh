#!/usr/bin/env bash
# The GPU path, end to end, on a CUDA machine where PyTorch is installed (the package runs from src/):
# the seed recipe on CUDA (bf16 autocast, channels_last, data on the GPU), --compile, the fast recipe, and
# the best recipe for three seeds (its models land in OUT_DIR).  MNIST must be in $DATA (digitrec fetch).
#   bash benchmarks/gpu_check.sh OUT_DIR
set -euo pipefail
out=${1:-gpu-check}
DATA=${DATA:-data} DEVICE=${DEVICE:-cuda} COMPILE=${COMPILE:-1}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1
log="$out/log.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$log"

train() {  # train NAME ARGS...: one whole `digitrec train` process, timed
  local name=$1; shift
  local start=$EPOCHREALTIME
  python3 -m digitrec train --device "$DEVICE" --data-dir "$DATA" --progress lines --out "/tmp/gpu-$name" "$@" 2>&1 | tee -a "$log"
  echo "== $name: $(python3 -c "print(round($EPOCHREALTIME - $start, 1))") s whole process" | tee -a "$log"
}
rm -rf /tmp/gpu-*
train seed --recipe seed
[ "$COMPILE" = 1 ] && train seed-compile --recipe seed --epochs 2 --compile
train fast --recipe fast
for s in 0 1 2; do
  train "best-$s" --recipe best --seed "$s"
  cp "/tmp/gpu-best-$s/model.safetensors" "$out/best-$s.safetensors"
  cp "/tmp/gpu-best-$s/model.json" "$out/best-$s.json"
done
python3 -m digitrec evaluate /tmp/gpu-best-0 --device "$DEVICE" --data-dir "$DATA" | head -1 | tee -a "$log"
