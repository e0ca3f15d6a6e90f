#!/bin/sh
# The core-module prototype (docs/core-module.md): CPython for WASI from Debian's source, built with Debian's
# clang and wasi-libc, embedded by tfcore.c, pre-initialized with Wizer from the npm registry.
#
#   sh bench/core_prototype/build.sh        # → $CACHE/tfcore.wasm (and the stages it needs, cached)
#
# Everything comes from Debian (apt-get, apt-get source) and npm; the artifacts go to $CACHE
# (TENANTFLOW_CORE_CACHE, default ~/.cache/tenantflow-core) and are never committed. Stages already done
# are kept (delete $CACHE to start over). Runs as root for apt-get (it installs only what is missing).
# Not part of `make guest` or `make test`: a prototype, measured by `python -m bench.core_module`.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${TENANTFLOW_CORE_CACHE:-$HOME/.cache/tenantflow-core}
JOBS=${JOBS:-2}
NICE="nice -n 10"
WIZER_VERSION=10.0.0
mkdir -p "$CACHE"
log() { echo "core_prototype: $*" >&2; }

# 1. Debian's toolchain: clang 14, lld, wasi-libc, compiler-rt builtins for wasm32; deb-src for the source.
PKGS="clang lld wasi-libc libclang-rt-dev-wasm32 dpkg-dev"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
    log "installing $PKGS"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS >/dev/null
fi
if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "enabling Debian's deb-src entries"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        >/etc/apt/sources.list.d/tenantflow-core-src.sources
    apt-get update -qq
fi

# 2. CPython 3.11 from Debian's source package (with Debian's patches applied by dpkg-source).
#    Pinned to bookworm's own version (PYTHON_DEB_VERSION to change it): the newest one apt knows may be listed
#    by the security suite's index but not be fetchable there (3.11.2-6+deb12u9 answered 404 on 2026-11-30).
PYTHON_DEB_VERSION=${PYTHON_DEB_VERSION:-3.11.2-6+deb12u8}
SRC=$CACHE/src-3.11
if [ ! -x "$SRC/configure" ]; then
    log "fetching Debian's python3.11 $PYTHON_DEB_VERSION source"
    (cd "$CACHE" && apt-get source -qq --download-only "python3.11=$PYTHON_DEB_VERSION" &&
        dpkg-source -x "python3.11_$PYTHON_DEB_VERSION.dsc" src-3.11) >/dev/null
fi
DEB_VERSION=$(sed -n 's/^Version: //p' "$CACHE"/python3.11_*.dsc | head -n 1)

# 3. The build Python (same version, native): cross-compiling CPython needs one.
NATIVE=$CACHE/build-native
if [ ! -x "$NATIVE/python" ]; then
    log "building the native build Python (once, ~10 min on 2 cores)"
    mkdir -p "$NATIVE"
    (cd "$NATIVE" && $NICE "$SRC/configure" -q && $NICE make -s -j"$JOBS") >"$CACHE/build-native.log" 2>&1
fi

# 4. CPython for wasm32-wasi with Debian's clang and wasi-libc. Debian's clang searches /usr/include for
#    wasm32-wasi too (after wasi-libc's headers), so configure would find the host's zlib, lzma and uuid
#    headers and the link would fail on -lz -llzma -luuid (seen): a sysroot of wasi-libc alone avoids that.
SYSROOT=$CACHE/sysroot
mkdir -p "$SYSROOT/include" "$SYSROOT/lib"
ln -sfn /usr/include/wasm32-wasi "$SYSROOT/include/wasm32-wasi"
ln -sfn /usr/lib/wasm32-wasi "$SYSROOT/lib/wasm32-wasi"
WCC="clang --target=wasm32-wasi --sysroot=$SYSROOT"
WASI=$CACHE/build-wasi
if [ ! -f "$WASI/libpython3.11.a" ]; then
    log "cross-compiling CPython for wasm32-wasi (once)"
    mkdir -p "$WASI"
    (
        cd "$WASI"
        CONFIG_SITE="$SRC/Tools/wasm/config.site-wasm32-wasi" PKG_CONFIG_LIBDIR="$SYSROOT/lib/pkgconfig" \
            CC="$WCC" CPP="$WCC -E" \
            AR=llvm-ar-14 RANLIB=llvm-ranlib-14 LDSHARED=wasm-ld \
            $NICE "$SRC/configure" -C --host=wasm32-unknown-wasi --build="$("$SRC/config.guess")" \
            --with-build-python="$NATIVE/python" --disable-test-modules
        $NICE make -j"$JOBS" libpython3.11.a python.wasm
    ) >"$CACHE/build-wasi.log" 2>&1 || { log "the WASI build failed: see $CACHE/build-wasi.log"; exit 1; }
fi

# 5. The embedding, linked as a reactor (no _start; tfcore.c's `wizer.initialize` runs the constructors).
OUT=$CACHE/out
mkdir -p "$OUT"
MODLIBS=$(printf 'print:\n\t@echo $(LIBS) $(MODLIBS) $(SYSLIBS)\n' | make -s -C "$WASI" -f Makefile -f - print)
log "linking tfcore.wasm (module libraries: $MODLIBS)"
$NICE $WCC -O2 -mexec-model=reactor -I"$WASI" -I"$SRC/Include" \
    -c "$HERE/tfcore.c" -o "$OUT/tfcore.o"
# Linked from inside the build dir: MODLIBS names some archives by paths relative to it.
(cd "$WASI" && $NICE $WCC -O2 -mexec-model=reactor -o "$OUT/tfcore-raw.wasm" \
    "$OUT/tfcore.o" libpython3.11.a $MODLIBS \
    -Wl,-z,stack-size=524288 -Wl,--stack-first -Wl,--max-memory=1073741824)

# 6. What the interpreter imports while Wizer runs it: the stdlib (from the source tree), the harness and
#    the author SDK (guest/tenantflow without its WIT transport and its host-side testing package).
APP=$OUT/app
rm -rf "$APP" && mkdir -p "$APP/tenantflow"
cp "$HERE/tfcore_app.py" "$APP/"
for f in "$REPO"/guest/tenantflow/*.py; do
    [ "$(basename "$f")" = _wit.py ] || cp "$f" "$APP/tenantflow/"
done
LIB=$OUT/lib/python3.11
if [ ! -d "$LIB" ]; then
    mkdir -p "$OUT/lib"
    cp -r "$SRC/Lib" "$LIB"
    # The build's sysconfig data (platform facts) sits next to the stdlib, as an install would put it.
    cp "$WASI"/build/lib.wasi-wasm32-3.11/_sysconfigdata_*.py "$LIB/" 2>/dev/null || true
fi

# 7. Wizer (the npm package's Linux binary, pinned), with WASI allowed during initialization only.
if [ ! -x "$CACHE/npm/node_modules/@bytecodealliance/wizer-linux-x64/wizer" ]; then
    log "installing @bytecodealliance/wizer@$WIZER_VERSION from npm"
    mkdir -p "$CACHE/npm"
    (cd "$CACHE/npm" && [ -f package.json ] || echo '{"private": true}' >package.json)
    (cd "$CACHE/npm" && npm install -s -E "@bytecodealliance/wizer@$WIZER_VERSION") >/dev/null
fi
WIZER=$CACHE/npm/node_modules/@bytecodealliance/wizer-linux-x64/wizer
log "pre-initializing with $($WIZER --version)"
$NICE "$WIZER" --allow-wasi --inherit-stdio true --mapdir /lib::"$OUT/lib" --mapdir /app::"$APP" \
    -o "$OUT/tfcore.wasm.tmp" "$OUT/tfcore-raw.wasm"
mv "$OUT/tfcore.wasm.tmp" "$CACHE/tfcore.wasm"
printf 'python3.11 %s (Debian source), clang %s, wasi-libc %s, wizer %s\n' "$DEB_VERSION" \
    "$(clang --version | head -n 1 | sed 's/.*version //')" "$(dpkg-query -W -f '${Version}' wasi-libc)" \
    "$WIZER_VERSION" >"$CACHE/tfcore.versions"
log "done: $CACHE/tfcore.wasm ($(wc -c <"$CACHE/tfcore.wasm") bytes; $(cat "$CACHE/tfcore.versions"))"
echo "$CACHE/tfcore.wasm"
