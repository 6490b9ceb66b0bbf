#!/bin/sh
# bentofile.yaml's docker.setup_script: runs as root in the image build, right after the
# Python packages are installed, and takes out what serving never reads. It only pays off in
# a squashed build (`make container`: `bentoml containerize --opt squash --opt
# build-arg=IMAGE_SLIM=1`), where the files it removes never reach a layer; in an
# unsquashed build (BentoCloud, plain `bentoml containerize`) it would only add a layer of
# rewritten copies, so there it does nothing. What each step saves: loadtests/README.md's
# size table (`python loadtests/image_size.py`).
set -eu
[ "${IMAGE_SLIM:-0}" = 1 ] || { echo "image_slim: not a squashed build, nothing removed"; exit 0; }

VENV="${VIRTUAL_ENV:-/app/.venv}"
SITE="$(echo "$VENV"/lib/python3*/site-packages)"
before="$(du -sm / --exclude=/proc --exclude=/sys 2>/dev/null | cut -f1)"

# 1. Build tools: uv (BentoML's Dockerfile installs it with pip only to install the packages)
#    and the caches of that install.
python3 -m pip uninstall -y -q uv 2>/dev/null || rm -f /usr/local/bin/uv /usr/local/bin/uvx
rm -rf /root/.cache /tmp/* 2>/dev/null || true

# 2. Package test suites and C headers: no package imports its own tests at run time.
find "$SITE" -depth -type d \( -name tests -o -name testing_data \) -path "*/site-packages/*/*" \
    -exec rm -rf {} +
find "$SITE" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.pyi' -o -name '*.c' \
    -o -name '*.pyx' -o -name '*.pxd' \) -delete

# 3. ONNX Runtime: the Python binding is self-contained (its only NEEDED libraries are the
#    C runtime); libonnxruntime.so is the C API for other languages. Its optimisation tools
#    (transformers, quantization, tools) are for converting models, which serving never does.
rm -f "$SITE"/onnxruntime/capi/libonnxruntime.so*
rm -rf "$SITE"/onnxruntime/transformers "$SITE"/onnxruntime/quantization "$SITE"/onnxruntime/tools

# 4. Debug symbols of the packages' own extension modules: strip --strip-unneeded keeps every
#    symbol that linking needs. Not the libraries auditwheel grafted into `*.libs/` folders:
#    patchelf rewrote their program headers, and strip then breaks them (NumPy's OpenBLAS
#    failed to load: "ELF load command address/offset not page-aligned"). binutils comes from
#    the base image's Debian and goes again.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends binutils >/dev/null
find "$SITE" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
    -exec strip --strip-unneeded {} +
apt-get purge -y -qq --auto-remove binutils >/dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

after="$(du -sm / --exclude=/proc --exclude=/sys 2>/dev/null | cut -f1)"
echo "image_slim: ${before} MB -> ${after} MB"
