#!/usr/bin/env bash
# The GPU measurement of issue 21 in one command, on a machine with a GPU and no Rust
# toolchain. Prepared here by `cargo xtask gpu-kit` (which builds the flow benches with
# flex + wgpu + vulkan, and with flex + wgpu as a WGSL fallback, and copies them, the xtask
# binary, the PyTorch peers and this script into .gpu/). On the device machine, from the repository root:
#
#   bash .gpu/measure.sh            # results in $OUT (or .gpu/out)
#
# It times, back to back on that machine: the flow benches (training steps, forward and
# inverse, NIS batches) on flex (its CPU) and on wgpu (its GPU), the table of both with the
# speed-up over flex (backends.md), and the PyTorch peers on CUDA (phi4 tutorial and the
# hierarchical Ising L = 16 flow) with their ms/step. About 5 minutes.
set -u
kit=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$kit/out}
mkdir -p "$out"
log="$out/measure.log"
exec > >(tee -a "$log") 2>&1
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
crit=/tmp/nrg-criterion
mkdir -p "$crit"
# The benches travel gzipped (the carried tree is limited to 64 MiB): `flows` is built with
# CubeCL's SPIR-V compiler (the `vulkan` feature), `flows-wgsl` with WGSL through naga, the
# fallback should the SPIR-V pipelines fail on this driver.
flows=/tmp/nrg-flows
gunzip -c "$kit/flows.gz" > "$flows" && chmod +x "$flows"
filter=${NRG_GPU_FILTER:-train_step|nis|hierarchical|coupling}
bench() { # backend, executable
    NRG_BENCH_DEVICE=$1 NRG_BENCH_INFO=$crit/device-$1.txt CRITERION_HOME=$crit \
        timeout 240 "$2" --bench --save-baseline "$1" "$filter"
}
echo "== flow benches on flex"
bench flex "$flows" || echo "the benches on flex failed or timed out"
echo "== flow benches on wgpu (SPIR-V)"
bench wgpu "$flows"
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
    # A timeout is not the compiler's failure: what finished stands, no second run.
    [ $rc -eq 124 ] && echo "the benches on wgpu timed out"
    echo "wgpu shaders: SPIR-V (vulkan feature)" >> "$out/device.txt"
else
    echo "the benches on wgpu (SPIR-V) failed (exit $rc); again with WGSL"
    gunzip -c "$kit/flows-wgsl.gz" > "$flows-wgsl" && chmod +x "$flows-wgsl"
    if bench wgpu "$flows-wgsl"; then
        echo "wgpu shaders: WGSL (the SPIR-V build failed)" >> "$out/device.txt"
    else
        echo "the benches on wgpu (WGSL) failed or timed out too"
    fi
fi
"$kit/xtask" bench-table --criterion "$crit" --backend flex,wgpu && cp "$crit/backends.md" "$crit/backends.csv" "$out/"
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== PyTorch peers on CUDA"
    (
        cd "$kit/peers"
        timeout 120 python3 phi4_flow_torch.py 0 300 256 cuda --train-only
        timeout 120 python3 neuralrg_ising_torch.py --L 16 --steps 60 --batch 512 --device cuda --report 20
    ) > "$out/peers.txt" 2>&1 || echo "a peer failed or timed out (see peers.txt)"
else
    echo "no CUDA PyTorch here: peers not run" | tee "$out/peers.txt"
fi
echo "== done"
