# Sourced by the scripts/gpu-*.sh run scripts (on the GPU machine, after the gpu-bundle prelude):
# the output folder, the CUDA libraries, the kernel cache, and a machine line at the top of a log.
OUT=${OUT:-/tmp/bailing-gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export BAILING_CACHE_DIR=${BAILING_CACHE_DIR:-/tmp/bailing-cache}
# machine_info LOG: the card, driver, clocks and Node version, appended to LOG.
machine_info() {
  { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; node --version; } 2>&1 | tee -a "$1"
}
