# Sourced by the GPU jobs (bench/gpu_*.sh): finds shared/gpu/bench ($shared), installs the carried bitsandbytes and
# XTuner-stack wheels into /tmp/bnb and /tmp/site, and builds the 7B-shape model at /tmp/m7b once.
shared=${SHARED_BENCH:-}
for candidate in ../shared/gpu/bench shared/gpu/bench; do
  [ -z "$shared" ] && [ -f "$candidate/make_model.py" ] && shared=$candidate
done
[ -n "$shared" ] || { echo "shared/gpu/bench not found: set SHARED_BENCH"; exit 2; }
[ -d /tmp/bnb/bitsandbytes ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bnb gpu-carry/bnb/*.whl
[ -d /tmp/site/xtuner ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site gpu-carry/xt/*.whl
[ -f /tmp/m7b/config.json ] || python3 "$shared/make_model.py" /tmp/m7b "$shared/tok"
