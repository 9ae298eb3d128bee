#!/usr/bin/env bash
# The GPU measurement of issue 21 in one command, on a machine with a GPU and no Rust
# toolchain. Prepared here by `cargo xtask gpu-kit` (which builds the flow benches with
# flex + wgpu + vulkan, and with flex + wgpu as a WGSL fallback, and copies them, the
# xtask binary, the PyTorch peers and this script into .gpu/). On the device machine, from
# the repository root:
#
#   bash .gpu/measure.sh            # results in $OUT (or .gpu/out)
#
# It times, back to back on that machine: the PyTorch peers on CUDA (phi4 tutorial and the
# hierarchical Ising L = 16 flow, their ms/step), the flow benches (training steps, forward
# and inverse, NIS batches) on wgpu (its GPU), the kernel launches of the two training
# steps timed on the device (launches.md), the benches on flex (its CPU), and the table of
# wgpu and flex with the speed-up over flex (backends.md). Everything fits in NRG_GPU_SECONDS (540 s by
# default; the device tool allows 600 s per command): each step gets at most what is left
# after the reserves of the steps behind it. About 5 minutes.
set -u
kit=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$kit/out}
mkdir -p "$out"
log="$out/measure.log"
exec > >(tee -a "$log") 2>&1
budget=${NRG_GPU_SECONDS:-540}
# Seconds for a step that wants `$1`, leaving `$2` for the steps after it (0 if none left).
slot() {
    local left=$((budget - SECONDS - $2))
    if [ "$left" -lt "$1" ]; then echo $((left > 0 ? left : 0)); else echo "$1"; fi
}
# The Vulkan loader (carried as .gl/*.deb, see the device tool's README) where none is there.
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
nv=/usr/local/nvidia/share
if [ -e $nv/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=$nv/glvnd/egl_vendor.d/10_nvidia.json
fi
(nvidia-smi -L || echo "no nvidia-smi") > "$out/device.txt" 2>&1
nproc >> "$out/device.txt"

if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== PyTorch peers on CUDA"
    (
        cd "$kit/peers"
        timeout 90 python3 phi4_flow_torch.py 0 300 256 cuda --train-only
        timeout 90 python3 neuralrg_ising_torch.py --L 16 --steps 60 --batch 512 --device cuda --report 20
    ) > "$out/peers.txt" 2>&1 || echo "a peer failed or timed out (see peers.txt)"
else
    echo "no CUDA PyTorch here: peers not run" | tee "$out/peers.txt"
fi

crit=/tmp/nrg-criterion
mkdir -p "$crit"
# The benches travel gzipped (the carried tree is limited to 64 MiB): `flows` is built with
# CubeCL's SPIR-V compiler (the `vulkan` feature), `flows-wgsl` with WGSL through naga, the
# fallback for the benches the SPIR-V build could not run, should its pipelines fail on
# this driver.
flows=/tmp/nrg-flows
gunzip -c "$kit/flows.gz" > "$flows" && chmod +x "$flows"
filter=${NRG_GPU_FILTER:-train_step|nis|hierarchical|coupling}
bench() { # backend, executable, seconds, filter
    if [ "$3" -lt 30 ]; then
        echo "no time left for the benches on $1"
        return 124
    fi
    NRG_BENCH_DEVICE=$1 NRG_BENCH_INFO=$crit/device-$1.txt CRITERION_HOME=$crit \
        timeout "$3" "$2" --bench --save-baseline "$1" "$4"
}
# The benchmark ids the filter selects, and those with a result under baseline `$1`.
expected=$("$flows" --bench --list "$filter" 2>/dev/null | sed -n 's/: benchmark$//p' | sort -u)
measured() {
    find "$crit" -path "*/$1/benchmark.json" -exec cat {} + 2>/dev/null \
        | grep -o '"full_id":"[^"]*"' | sed 's/"full_id":"//; s/"$//' | sort -u
}
# Reserves: the launch profile 45 s (more if the time is there), flex 135 s and the table.
echo "== flow benches on wgpu (SPIR-V)"
bench wgpu "$flows" "$(slot 210 190)" "$filter"
rc=$?
missing=$(comm -23 <(echo "$expected") <(measured wgpu) | tr '\n' ' ' | sed 's/ *$//')
shaders="SPIR-V (vulkan feature), exit $rc"
# A crash (not a timeout, and not a crash on the way out after every result was saved)
# sends what is missing to the WGSL build; the results SPIR-V saved stand.
if [ -n "$missing" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ]; then
    echo "the benches on wgpu (SPIR-V) failed (exit $rc) without: $missing; those with WGSL"
    gunzip -c "$kit/flows-wgsl.gz" > "$flows-wgsl" && chmod +x "$flows-wgsl"
    bench wgpu "$flows-wgsl" "$(slot 210 190)" "^($(echo "$missing" | tr ' ' '|'))\$"
    shaders="SPIR-V (exit $rc), but WGSL (exit $?) for: $missing"
    profiler="$flows-wgsl"
fi
echo "wgpu shaders: $shaders" | tee -a "$out/device.txt"
# The kernel launches of the two training steps, each timed on the device (launches.md,
# launches.json and sequence-<flow>.txt, rewritten after each flow), with the build that
# ran the benches. With NVIDIA's shader disk cache switched off (the driver's variable, for
# Vulkan as for OpenGL; the benches have just filled the cache), so that the first step's
# time in launches.md is what a user's first run compiles.
echo "== kernel launches per training step on wgpu"
t=$(slot 120 145)
if [ "$t" -ge 20 ]; then
    __GL_SHADER_DISK_CACHE=0 NRG_STEP_PROFILE="$out" timeout "$t" "${profiler:-$flows}" \
        > "$out/launches.log" 2>&1 \
        || echo "the launch profile failed or timed out (exit $?, see launches.log)"
else
    echo "no time left for the launch profile"
fi
echo "== flow benches on flex"
bench flex "$flows" "$(slot 210 10)" "$filter" || echo "the benches on flex failed or timed out"
"$kit/xtask" bench-table --criterion "$crit" --backend flex,wgpu && cp "$crit/backends.md" "$crit/backends.csv" "$out/"
echo "== done in $SECONDS s"
