#!/bin/sh
# Builds llama.cpp's `llama-server` (CPU only, static) from the llama-cpp-python sdist pinned in pyproject.toml,
# once: the binary is cached in $DROPWARDEN_CACHE_DIR/llama-server-<version>/ (default ~/.cache/dropwarden),
# keyed by the sdist's version and sha256; a later run with the same sdist only prints the binary's path.
#
#   sh packaging/dev/build-llama-server.sh            # version from pyproject.toml
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 JOBS=4 sh packaging/dev/build-llama-server.sh
#
# Environment: PYTHON (a python with pip, default .venv/bin/python or python3), JOBS (default 2),
# LLAMA_SERVER_CMAKE_ARGS (extra cmake arguments, e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90").
# The last line of output is the binary's path. The tests find it there (tests/llama_server.py).
set -eu

here=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
version=${LLAMA_CPP_PYTHON_VERSION:-$(sed -n 's/.*llama-cpp-python\[server\]==\([0-9][0-9.]*\).*/\1/p' "$here/pyproject.toml" | head -n 1)}
[ -n "$version" ] || { echo "build-llama-server: no llama-cpp-python version pinned in pyproject.toml" >&2; exit 1; }
cache_root=${DROPWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dropwarden}
dest="$cache_root/llama-server-$version"
binary="$dest/llama-server"
stamp="$dest/sdist.sha256"

work=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

sdist="$dest/llama_cpp_python-$version.tar.gz"
mkdir -p "$dest"
if [ ! -f "$sdist" ]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work/dl"
    mv "$work"/dl/llama_cpp_python-*.tar.gz "$sdist"
fi
sha=$(sha256sum "$sdist" | cut -d' ' -f1)
if [ -x "$binary" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha" ]; then
    echo "$binary"
    exit 0
fi

echo "build-llama-server: building llama-server from llama-cpp-python $version (sha256 $sha); this takes minutes" >&2
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# Static, CPU only, portable (no -march=native), no network at build time (no prebuilt web UI download).
# shellcheck disable=SC2086
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    ${LLAMA_SERVER_CMAKE_ARGS:-} >&2
cmake --build "$work/build" --target llama-server -j "${JOBS:-2}" >&2
install -m 0755 "$work/build/bin/llama-server" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$sha" > "$stamp"
echo "$binary"
