#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of every input parser.
#
#   Fuzz/run.sh SECONDS [TARGET…]     build all targets into .build-fuzz/, run each for SECONDS
#   Fuzz/run.sh build                 only build
#   Fuzz/run.sh list                  print the target names
#
# FUZZ_OUT=DIR builds and runs elsewhere than .build-fuzz/ (a CI cache, a copy beside a long run).
#
# The needed sources are compiled directly with swiftc (no SwiftPM build of the server
# dependencies): each module the targets import is a static library built with
# `-sanitize=fuzzer,address` so its code is instrumented. Exits non-zero when a target crashes,
# leaks, times out or breaks one of its invariants; the input that did it is written to
# .build-fuzz/artifacts/<target>/ and can be replayed with `.build-fuzz/bin/<target> FILE`.
# Run as root on a fresh Debian 12 machine with the Swift toolchain, it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${FUZZ_OUT:-$ROOT/.build-fuzz}
TARGETS_ALL=(signature pipevideo pipevideo_api strict_json settings path_template event_document)
YAMS_VERSION=6.2.2

usage() { echo "usage: Fuzz/run.sh SECONDS [TARGET…] | build | list   (targets: ${TARGETS_ALL[*]})" >&2; exit 2; }
[ $# -ge 1 ] || usage
MODE=$1; shift
case "$MODE" in
    list) printf '%s\n' "${TARGETS_ALL[@]}"; exit 0 ;;
    build) ;;
    *[!0-9]*|'') usage ;;
esac
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${TARGETS_ALL[@]}")
for t in "${TARGETS[@]}"; do
    [[ " ${TARGETS_ALL[*]} " == *" $t "* ]] || { echo "unknown target: $t" >&2; usage; }
done

# --- What the build needs: libcrypto headers (PipehookSignature), git (Yams), ar, the toolchain. ---
need=()
pkg-config --exists libcrypto 2>/dev/null || need+=(libssl-dev pkg-config)
command -v git >/dev/null || need+=(git)
command -v ar >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing: ${need[*]} (run as root to install them)" >&2; exit 1
    fi
fi
SWIFTC=${SWIFTC:-$(command -v swiftc)}
TOOLBIN=$(dirname "$(readlink -f "$SWIFTC")")
CLANG=${CLANG:-$TOOLBIN/clang}
[ -x "$CLANG" ] || CLANG=$(command -v clang)

mkdir -p "$OUT/lib" "$OUT/bin" "$OUT/obj"
LIB=$OUT/lib
MODULE_FLAGS=()
BASE_FLAGS=(-O -g -sanitize=fuzzer,address -parse-as-library -I "$LIB" -I "$ROOT/Sources/CLibCrypto")
# Our modules as Package.swift builds them: Swift 6 mode, ExistentialAny; warnings are errors here.
SWIFT_FLAGS=("${BASE_FLAGS[@]}" -swift-version 6 -enable-upcoming-feature ExistentialAny -warnings-as-errors)

# Rebuilds a static library module when any of its inputs is newer than it.
stale() { # output inputs…
    local out=$1; shift
    [ -e "$out" ] || return 0
    local f; for f in "$@"; do [ "$f" -nt "$out" ] && return 0; done
    return 1
}

# --- Yams (the settings loader's YAML parser), with its C core, instrumented too. ---
YAMS_SRC=$OUT/Yams
if [ ! -d "$YAMS_SRC/Sources/Yams" ]; then
    if [ -n "${YAMS_DIR:-}" ]; then src=$YAMS_DIR
    elif [ -d "$ROOT/.build/checkouts/Yams/Sources/Yams" ]; then src=$ROOT/.build/checkouts/Yams
    elif [ -d /opt/swift-packages/jpsim/Yams.git ]; then src=/opt/swift-packages/jpsim/Yams.git
    else src=https://github.com/jpsim/Yams.git
    fi
    echo "fuzz: Yams from $src"
    if [ -d "$src/Sources/Yams" ]; then cp -R "$src" "$YAMS_SRC"
    else git -c advice.detachedHead=false clone -q --depth 1 --branch "$YAMS_VERSION" "$src" "$YAMS_SRC"
    fi
fi
if stale "$LIB/libCYaml.a" "$YAMS_SRC"/Sources/CYaml/src/*.c; then
    echo "fuzz: building CYaml"
    rm -f "$OUT"/obj/cyaml-*.o
    for c in "$YAMS_SRC"/Sources/CYaml/src/*.c; do
        "$CLANG" -c -O1 -g -fsanitize=fuzzer-no-link,address -DYAML_DECLARE_STATIC \
            -I "$YAMS_SRC/Sources/CYaml/include" -o "$OUT/obj/cyaml-$(basename "$c" .c).o" "$c"
    done
    rm -f "$LIB/libCYaml.a"; ar rcs "$LIB/libCYaml.a" "$OUT"/obj/cyaml-*.o
fi

module() { # name sources… (extra flags in MODULE_FLAGS)
    local name=$1; shift
    if stale "$LIB/lib$name.a" "$@"; then
        echo "fuzz: building $name"
        local flags=("${SWIFT_FLAGS[@]}")
        [ ${#MODULE_FLAGS[@]} -eq 0 ] || flags=("${MODULE_FLAGS[@]}")
        (cd "$OUT/obj" && "$SWIFTC" "${flags[@]}" -module-name "$name" -emit-module -emit-module-path "$LIB/$name.swiftmodule" \
            -emit-library -static -o "$LIB/lib$name.a" "$@")
    fi
}
# Yams as its own manifest builds it (Swift 5 mode, SWIFT_PACKAGE, YAML_DECLARE_STATIC).
MODULE_FLAGS=("${BASE_FLAGS[@]}" -swift-version 5 -DSWIFT_PACKAGE -Xcc -DYAML_DECLARE_STATIC -I "$YAMS_SRC/Sources/CYaml/include")
module Yams "$YAMS_SRC"/Sources/Yams/*.swift
MODULE_FLAGS=()
SWIFT_FLAGS+=(-I "$YAMS_SRC/Sources/CYaml/include" -Xcc -DYAML_DECLARE_STATIC)
S=$ROOT/Sources
module PipehookLifecycle "$S"/PipehookLifecycle/*.swift
module PipehookSignature "$S"/PipehookSignature/*.swift
module PipehookFormats "$S"/PipehookFormats/*.swift
module PipehookSettings "$S"/PipehookSettings/*.swift
# Without LeaseKeeper (it logs through swift-log, which no target needs).
module PipehookStore $(ls "$S"/PipehookStore/*.swift | grep -v '/LeaseKeeper.swift$')
# Only the pure part of the handlers (no Subprocess, AsyncHTTPClient or NIO): the event document,
# the download path renderer and the multipart writer.
module PipehookHandlers "$S"/PipehookHandlers/StepTypes.swift "$S"/PipehookHandlers/PathTemplate+Render.swift \
    "$S"/PipehookHandlers/MultipartForm.swift

LIBS=(-L "$LIB" -lPipehookHandlers -lPipehookStore -lPipehookSettings -lYams -lCYaml -lPipehookFormats
    -lPipehookSignature -lPipehookLifecycle -lcrypto)
for t in "${TARGETS_ALL[@]}"; do
    src=$ROOT/Fuzz/Targets/$t.swift
    if stale "$OUT/bin/$t" "$src" "$ROOT"/Fuzz/Support/*.swift "$LIB"/*.a; then
        echo "fuzz: linking $t"
        (cd "$OUT/obj" && "$SWIFTC" "${SWIFT_FLAGS[@]}" -use-ld=lld -module-name "Fuzz_$t" -o "$OUT/bin/$t" "$src" "$ROOT"/Fuzz/Support/*.swift "${LIBS[@]}")
    fi
done
[ "$MODE" = build ] && exit 0

# --- Run: each target for MODE seconds over its committed seeds plus what earlier runs found. ---
status=0
summary=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    log=$OUT/$t.log
    echo "fuzz: $t for ${MODE}s"
    set +e
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$OUT/bin/$t" -max_total_time="$MODE" -timeout=10 -rss_limit_mb=2048 \
        -max_len=8192 -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t/" \
        "$OUT/corpus/$t" "$ROOT/Fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        status=1
        summary+=("$t: FAILED (exit $rc) after ${runs:-?} executions; see $log and $OUT/artifacts/$t/")
        grep -E "ERROR|FAIL|Fatal|==[0-9]+==|invariant" "$log" | head -n 20 >&2 || true
    else
        summary+=("$t: ${runs:-?} executions in ${MODE}s, no crash")
    fi
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
