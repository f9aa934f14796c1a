#!/bin/sh
# The example's build step: the server and the client, instrumented for gcov, twice:
#   build/static/   statically linked, for the default guest (busybox, no libc);
#   build/dynamic/  dynamically linked, for Debian machines of the host's release or a
#                   newer one (the host's libc).
# gcc writes each object's .gcno next to it; the programs write .gcda files at exit,
# which `flotilla test --coverage` gathers from the machines and pairs with them.
set -eu
cd "$(dirname "$0")"
CC=${CC:-gcc}
for kind in static dynamic; do
    flags="--coverage -O0 -g"
    [ "$kind" = static ] && flags="$flags -static"
    mkdir -p "build/$kind"
    rm -f "build/$kind"/*.gcno "build/$kind"/*.gcda
    for prog in server client; do
        # shellcheck disable=SC2086 # $flags is a list of options
        $CC $flags -o "build/$kind/$prog" "$prog.c" common.c
    done
done
# The client again in Rust, with LLVM's source-based coverage, static for the default
# guest: its .profraw data is read against this binary's coverage map (rust.toml's
# coverage.llvm_binaries), by llvm-profdata and llvm-cov of LLVM 19 or newer.
if command -v rustc >/dev/null 2>&1; then
    rustc --edition 2021 -C instrument-coverage -C opt-level=0 -C target-feature=+crt-static \
        -o build/static/client-rs client.rs
else
    echo "no rustc: build/static/client-rs (rust.toml) not built" >&2
fi
echo "built: $(ls build/static build/dynamic | grep -v '\.gc' | tr '\n' ' ')"
