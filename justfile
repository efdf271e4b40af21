# Convenience recipes; each is the plain cargo command shown, so `just` is optional.

# Run the default experiment grid (experiments/quick.yaml) or another: `just sweep experiments/x.yaml`
sweep FILE="experiments/quick.yaml" *ARGS="":
    cargo run --release -- sweep {{FILE}} {{ARGS}}

# Run every test (the command CI runs)
test:
    cargo test --release --workspace

# Throughput benchmark (samples/s) and the k-means criterion benchmark
bench:
    cargo run --release -- bench
    cargo bench -p cqr-methods --bench kmeans

# Regenerate charts and the report of a results directory from its tables
plot DIR="results/quick":
    cargo run --release -- plot {{DIR}}
    cargo run --release -- report {{DIR}}

# Same-run speed comparison with PyTorch, alternating, 3 repeats (needs torch in a venv outside the
# repo: `python3 -m venv ../pyvenv && ../pyvenv/bin/pip install torch`); BATCH 128 is DLRM's own
# protocol (`just bench-compare ../pyvenv/bin/python 5 128`); not part of CI
bench-compare PY="../pyvenv/bin/python" REPEATS="3" BATCH="2048":
    bash bench/compare.sh {{PY}} {{REPEATS}} {{BATCH}}

# Judge a code change's speed: two `cqr` binaries (before, after) alternated in one sitting, the
# geometric-mean ratio new/old with a 95% interval (`cqr bench --ab kernels|precision` does the same
# within one binary)
bench-ab OLD NEW CASES="dense-10k,hashing-1m" ROUNDS="8":
    python3 bench/ab_binaries.py {{OLD}} {{NEW}} --cases {{CASES}} --rounds {{ROUNDS}}

# k-means: the criterion benchmark, then faiss on the same problem (needs faiss-cpu in the venv)
bench-kmeans PY="../pyvenv/bin/python":
    cargo bench -p cqr-methods --bench kmeans
    {{PY}} bench/faiss_kmeans.py

# Re-train 3 finished cells of the quick grid and compare every metric with the stored records
verify N="3":
    cargo run --release -- sweep --verify {{N}}

# The GPU path: a small DLRM on wgpu against flex (what CI runs; needs a Vulkan driver, e.g.
# Debian's mesa-vulkan-drivers for software Vulkan)
test-gpu:
    CQR_REQUIRE_WGPU=1 cargo test --profile gpu-check -p cqr-models --features wgpu --test wgpu_backend -- --nocapture

# A stripped release binary with the wgpu backend for bench/gpu.sh (built in its own target
# directory, target-gpu/build, ignored by git: ~25 min cold on 2 cores; set GPU_TARGET to an
# existing target directory to reuse its dependencies); copies this machine's Vulkan loader
# beside it if any. The stripped binary is ~109 MB (2026-12-04), over the 64 MiB a device call
# carries; gzip takes it to ~26 MB, and bench/gpu.sh unpacks target-gpu/cqr.gz itself
gpu-build GPU_TARGET="target-gpu/build":
    CARGO_TARGET_DIR={{GPU_TARGET}} cargo build --release -p cqr-runner --features wgpu
    mkdir -p target-gpu/lib
    cp {{GPU_TARGET}}/release/cqr target-gpu/cqr && strip target-gpu/cqr
    gzip -9 -c target-gpu/cqr > target-gpu/cqr.gz
    cp -L "$(ldconfig -p | awk '/libvulkan.so.1 /{print $NF; exit}')" target-gpu/lib/ 2>/dev/null || echo "no libvulkan.so.1 here: the GPU machine's own loader is needed"
    du -ch target-gpu/cqr.gz target-gpu/lib | tail -1
