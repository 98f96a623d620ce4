#!/usr/bin/env bash
# Build the native gRPC front (native/grpc_front.cc, gRPC's C++ server) into native/build/grpc_front.
# It needs a C++ compiler and gRPC's C++ headers and libraries: Debian's g++ and libgrpc++-dev, installed first
# when missing and this runs as root (or with sudo). Without them the service runs the Python front instead.
#   native/build.sh [--if-possible]   (--if-possible: say why and exit 0 when it cannot be built)
set -euo pipefail
cd "$(dirname "$0")"
soft=0; [ "${1:-}" = "--if-possible" ] && soft=1
give_up() { echo "native/build.sh: $1; gRPC will run on the Python front" >&2; [ $soft -eq 1 ] && exit 0; exit 1; }
if ! pkg-config --exists grpc++ 2>/dev/null || ! command -v g++ >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  command -v apt-get >/dev/null 2>&1 || give_up "no gRPC C++ library and no apt-get to install libgrpc++-dev"
  { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; } || give_up "installing libgrpc++-dev needs root"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    g++ pkg-config libgrpc++-dev >/dev/null || give_up "apt-get could not install g++ and libgrpc++-dev"
fi
mkdir -p build
# gRPC, abseil and the C++ runtime linked in: the program needs only libc, OpenSSL and zlib where it runs (any
# Debian-based image with Python has them), not the -dev packages it was built with.
static_libs=$(pkg-config --static --libs-only-l grpc++ | tr ' ' '\n' | grep -v -x -E -e '-l(ssl|crypto|z|rt|atomic|m)' \
  | tr '\n' ' ')
# shellcheck disable=SC2046,SC2086  # pkg-config's flags are words
g++ -std=c++17 -O2 -Wall -Wextra -o build/grpc_front.partial grpc_front.cc $(pkg-config --cflags grpc++) \
  -static-libstdc++ -static-libgcc -Wl,-Bstatic $static_libs -Wl,-Bdynamic -lssl -lcrypto -lz -lm -pthread \
  || give_up "the compiler failed"
mv build/grpc_front.partial build/grpc_front
