#!/usr/bin/env bash
# The TV side on ARM64 (issue #15): cross-build omega-braind, omega-brainctl and
# the TV crates' test executables for aarch64-unknown-linux-gnu with Debian's
# rustc-web and its arm64 standard library, then run them on an emulated
# Cortex-A53 (qemu-system-aarch64, Debian's arm64 cloud kernel, a busybox
# initramfs built here). ../shared/ARM64.md has the measurements behind it.
#
#   scripts/arm64.sh install|build|run|all|--help
#
# Exits non-zero when a step fails or the emulated TV does not print
# `ARM64 RESULT pass`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

# One pinned toolchain: rustc-web and its arm64 standard library must be the
# same version (bookworm-security). Change both together, never one.
RUST_DEB_VERSION="${OMEGA_ARM64_RUST_DEB_VERSION:-1.96.0+dfsg1-1~deb12u2}"
TRIPLE=aarch64-unknown-linux-gnu
# Separate target dir: the host build's artifacts are not invalidated by the
# other rustc.
TARGET_DIR="${OMEGA_ARM64_TARGET_DIR:-$ROOT/target/arm64}"
# Downloaded kernel and busybox, the initramfs tree, the console log.
CACHE="${OMEGA_ARM64_CACHE:-$ROOT/target/arm64-cache}"
# Seconds the emulated TV may take from boot to power-off before it counts as
# failed (about 15 s for the daemon alone by hand; the test executables are
# the bulk).
RUN_TIMEOUT="${OMEGA_ARM64_TIMEOUT:-3600}"
MODEL_DIR="${OMEGA_MODEL_DIR:-$ROOT/models/all-MiniLM-L6-v2}"
SHARED_DIR="${OMEGA_SHARED_DIR:-$ROOT/../shared}"

log() { echo "arm64: $*"; }
die() { echo "arm64: error: $*" >&2; exit 1; }

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<EOF

Steps:
  install  dpkg --add-architecture arm64; apt-get install rustc-web and
           libstd-rust-web-dev:arm64 (both $RUST_DEB_VERSION),
           gcc/g++-aarch64-linux-gnu, clang-19, qemu-system-arm; download
           busybox-static:arm64 and the arm64 cloud kernel into the cache.
           Skips what is already there.
  build    cross-build (release) omega-braind and omega-brainctl, and the
           test executables of the TV crates, into $TARGET_DIR.
  run      build the initramfs and boot it; one line per check
           (ARM64 CHECK <name> ok|FAIL), then ARM64 RESULT pass|fail.
  all      install, build, run.

Environment: OMEGA_ARM64_TARGET_DIR, OMEGA_ARM64_CACHE, OMEGA_ARM64_CATALOG_ITEMS
(the large catalog whose memory is reported, default $CATALOG_ITEMS), OMEGA_ARM64_TIMEOUT
(seconds, default $RUN_TIMEOUT), OMEGA_MODEL_DIR, OMEGA_SHARED_DIR.
EOF
}

# ---------------------------------------------------------------- install

# True when package $1 (name[:arch]) is installed at version $2 (any when empty).
installed() {
  local status version
  status="$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null)" || return 1
  version="${status##* }"
  [[ "$status" == "install ok installed"* ]] || return 1
  [ -z "${2:-}" ] || [ "$version" = "$2" ]
}

cmd_install() {
  local updated=0 missing=() p
  update() { if [ "$updated" = 0 ]; then log "apt-get update"; apt-get update -qq; updated=1; fi; }

  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64"
    dpkg --add-architecture arm64
  fi
  installed rustc-web "$RUST_DEB_VERSION" || missing+=("rustc-web=$RUST_DEB_VERSION")
  installed libstd-rust-web-dev:arm64 "$RUST_DEB_VERSION" ||
    missing+=("libstd-rust-web-dev:arm64=$RUST_DEB_VERSION")
  for p in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu clang-19 qemu-system-arm cpio; do
    installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    update
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "toolchain already installed (rustc-web $RUST_DEB_VERSION)"
  fi

  # busybox-static:arm64 and the kernel are unpacked into the cache, not
  # installed: the host keeps its own busybox and kernel.
  mkdir -p "$CACHE/debs"
  if [ ! -x "$CACHE/busybox/bin/busybox" ]; then
    update
    log "downloading busybox-static:arm64"
    (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root busybox-static:arm64)
    rm -rf "$CACHE/busybox"
    dpkg-deb -x "$(ls "$CACHE"/debs/busybox-static_*_arm64.deb | tail -1)" "$CACHE/busybox"
  else
    log "busybox-static:arm64 already in $CACHE/busybox"
  fi
  if [ ! -f "$CACHE/vmlinuz" ]; then
    update
    # The metapackage names the current kernel package.
    local kpkg
    kpkg="$(apt-cache depends linux-image-cloud-arm64:arm64 |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -1)"
    [ -n "$kpkg" ] || die "no linux-image-*-cloud-arm64 package found"
    log "downloading $kpkg:arm64"
    (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg:arm64")
    rm -rf "$CACHE/kernel"
    dpkg-deb -x "$(ls "$CACHE"/debs/"$kpkg"_*_arm64.deb | tail -1)" "$CACHE/kernel"
    cp "$(ls "$CACHE"/kernel/boot/vmlinuz-* | head -1)" "$CACHE/vmlinuz"
    rm -rf "$CACHE/kernel" # the modules: the cloud kernel has virtio built in
  else
    log "kernel already in $CACHE/vmlinuz"
  fi
  rm -rf "$CACHE/debs"
  log "install done"
}

# ---------------------------------------------------------------- build

# The TV crates whose test executables run on the emulated TV: the protocol,
# the brain's core and actors, the embedder and the privacy code (and below,
# the daemon's fault tests).
TEST_CRATES=(omega-protocol omega-brain-core omega-brain omega-embed omega-privacy)

cross_env() {
  [ -x /usr/bin/rustc ] || die "/usr/bin/rustc missing: run scripts/arm64.sh install"
  [ -d /usr/lib/rustlib/$TRIPLE ] || die "the $TRIPLE standard library is missing: run scripts/arm64.sh install"
  # Debian's rustc (with its arm64 std) and the machine's cargo.
  export RUSTC=/usr/bin/rustc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  # The C and C++ in dependencies (usearch, numkong, mimalloc, ring) with
  # clang-19: GCC 12 fails on numkong's sve2p1/sme modifiers.
  export CC_aarch64_unknown_linux_gnu=clang-19
  export CXX_aarch64_unknown_linux_gnu=clang++-19
  export CFLAGS_aarch64_unknown_linux_gnu=--target=aarch64-linux-gnu
  export CXXFLAGS_aarch64_unknown_linux_gnu=--target=aarch64-linux-gnu
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  export CARGO_TERM_COLOR=never
}

cmd_build() {
  cross_env
  local out="$TARGET_DIR/$TRIPLE/release" tv="$TARGET_DIR/tv"
  log "rustc: $("$RUSTC" --version) (workspace rust-version $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml))"
  log "cargo build --release --target $TRIPLE -p omega-brain-daemon"
  cargo build --release --locked --target "$TRIPLE" --target-dir "$TARGET_DIR" \
    -p omega-brain-daemon --bins
  # Copied out before the tests are built: their build of the same package
  # (with the `testing` feature) would overwrite the binaries in place.
  rm -rf "$tv" && mkdir -p "$tv/bin" "$tv/tests"
  cp "$out/omega-braind" "$out/omega-brainctl" "$tv/bin/"
  aarch64-linux-gnu-strip "$tv/bin/omega-braind" "$tv/bin/omega-brainctl"
  log "stripped sizes: $(cd "$tv/bin" && stat -c '%n %s B' omega-braind omega-brainctl | paste -sd, -)"

  # Release profile for the tests too: shares the dependencies built above
  # (a dev build would compile them all again), and the model runs at a
  # usable speed under emulation.
  local pkgs=() p
  for p in "${TEST_CRATES[@]}"; do pkgs+=(-p "$p"); done
  log "cargo test --release --no-run --target $TRIPLE ${pkgs[*]}"
  cargo test --release --locked --no-run --target "$TRIPLE" --target-dir "$TARGET_DIR" \
    "${pkgs[@]}" --message-format json-render-diagnostics >"$tv/cargo-test.json"
  # The daemon's fault tests (kill -9 during observes, an inference panic,
  # damaged files, hostile requests, a full disk), the same as on x86-64. They
  # start the `testing` build of omega-braind from its build path, which the
  # initramfs reproduces (testing-braind.path).
  log "cargo test --release --no-run --target $TRIPLE -p omega-brain-daemon --test faults"
  cargo test --release --locked --no-run --target "$TRIPLE" --target-dir "$TARGET_DIR" \
    -p omega-brain-daemon --test faults --message-format json-render-diagnostics >>"$tv/cargo-test.json"
  cp "$out/omega-braind" "$tv/testing-braind"
  aarch64-linux-gnu-strip "$tv/testing-braind"
  echo "$out/omega-braind" >"$tv/testing-braind.path"
  # name<TAB>path for each test executable (lib unit tests and tests/*.rs).
  python3 - "$tv/cargo-test.json" >"$tv/tests.tsv" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    crate = m["package_id"].split("#")[-1].split("@")[0].split("/")[-1]
    print(f'{crate}:{m["target"]["kind"][0]}:{m["target"]["name"]}\t{m["executable"]}')
EOF
  local n=0 name path
  while IFS=$'\t' read -r name path; do
    cp "$path" "$tv/tests/${name//:/-}"
    aarch64-linux-gnu-strip "$tv/tests/${name//:/-}"
    n=$((n + 1))
  done <"$tv/tests.tsv"
  [ "$n" -gt 0 ] || die "no test executables built"
  log "$n test executables in $tv/tests"
}

# ---------------------------------------------------------------- run

# Items in a large catalog whose import and memory the run reports (0: none,
# the default: every item is embedded under emulation; on a loaded 2-core
# machine 36 items and the model load took 70 s, so 10,000 would take hours).
CATALOG_ITEMS="${OMEGA_ARM64_CATALOG_ITEMS:-0}"

# Copies the aarch64 shared libraries that $@ need (transitively) into $root/lib.
copy_libs() {
  local root="$1" f lib todo=() seen=" "
  shift
  todo=("$@")
  while [ "${#todo[@]}" -gt 0 ]; do
    f="${todo[0]}"
    todo=("${todo[@]:1}")
    for lib in $(aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      case "$seen" in *" $lib "*) continue ;; esac
      seen+="$lib "
      [ -f "/usr/aarch64-linux-gnu/lib/$lib" ] || die "$lib (needed by $f) not in /usr/aarch64-linux-gnu/lib"
      cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$root/lib/"
      todo+=("/usr/aarch64-linux-gnu/lib/$lib")
    done
  done
  cp -L /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 "$root/lib/"
}

# A JSON-lines catalog of $1 items, t0..t{n-1}, six genres in turn (the
# daemon fault test's catalog shape).
catalog() {
  awk -v n="$1" 'BEGIN {
    split("comedy horror documentary animation thriller romance", g, " ")
    for (i = 0; i < n; i++) {
      x = g[i % 6 + 1]
      printf "{\"id\":\"t%d\",\"title\":\"A %s film number %d\",\"genres\":[\"%s\"],\"year\":%d,\"description\":\"a %s story, part %d\"}\n", i, x, i, x, 2000 + i % 20, x, i
    }
  }'
}

cmd_run() {
  local tv="$TARGET_DIR/tv" root="$CACHE/initramfs" f
  [ -x "$tv/bin/omega-braind" ] || die "no aarch64 build in $tv: run scripts/arm64.sh build"
  [ -f "$CACHE/vmlinuz" ] && [ -x "$CACHE/busybox/bin/busybox" ] || die "no kernel or busybox: run scripts/arm64.sh install"
  scripts/fetch-model.sh "$MODEL_DIR"
  [ -f "$SHARED_DIR/reference/minilm_reference.json" ] || die "$SHARED_DIR/reference/minilm_reference.json missing (set OMEGA_SHARED_DIR)"

  log "initramfs in $root"
  rm -rf "$root"
  mkdir -p "$root"/{bin,lib,proc,sys,dev,tmp,model,shared/reference,tv/bin,tv/tests}
  cp "$CACHE/busybox/bin/busybox" "$root/bin/"
  cp "$tv/bin/"* "$root/tv/bin/"
  cp "$tv/tests/"* "$root/tv/tests/"
  f="$(cat "$tv/testing-braind.path")"
  mkdir -p "$root$(dirname "$f")"
  cp "$tv/testing-braind" "$root$f"
  copy_libs "$root" "$root"/tv/bin/* "$root"/tv/tests/* "$root$f"
  cp "$MODEL_DIR"/{config.json,tokenizer.json,model.safetensors} "$root/model/"
  cp "$SHARED_DIR/reference/minilm_reference.json" "$root/shared/reference/"
  catalog 36 >"$root/tv/catalog.jsonl"
  [ "$CATALOG_ITEMS" -gt 0 ] && catalog "$CATALOG_ITEMS" >"$root/tv/catalog-big.jsonl"
  echo "CATALOG_ITEMS=$CATALOG_ITEMS" >"$root/tv/settings"
  install -m 0755 scripts/arm64-init.sh "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$CACHE/initrd.gz"
  log "initramfs $(( $(stat -c %s "$CACHE/initrd.gz") / 1024 / 1024 )) MiB (gzip)"

  log "booting qemu-system-aarch64 (cortex-a53, 2 cpus, 2 GiB; timeout $RUN_TIMEOUT s)"
  local console="$CACHE/console.log" rc=0
  timeout --kill-after=10 "$RUN_TIMEOUT" qemu-system-aarch64 -M virt -cpu cortex-a53 -m 2048 -smp 2 \
    -nographic -no-reboot -nic none -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=1 quiet" </dev/null |
    sed -u 's/\r$//' | tee "$console" | grep --line-buffered '^ARM64 ' || rc=$?
  if grep -q '^ARM64 RESULT pass' "$console"; then
    log "pass (console: $console)"
  else
    grep -q '^ARM64 RESULT' "$console" || log "no result line: qemu timed out or the guest crashed (exit $rc); the last console lines:"
    grep -q '^ARM64 RESULT' "$console" || tail -n 40 "$console"
    die "the emulated TV failed (console: $console)"
  fi
}

# ---------------------------------------------------------------- main

step() {
  local name="$1" t0
  t0=$(date +%s)
  log "== $name"
  "cmd_$name"
  log "== $name done in $(( $(date +%s) - t0 )) s"
}

case "${1:-}" in
  install|build|run) step "$1" ;;
  all) t_all=$(date +%s); step install; step build; step run
       log "all done in $(( $(date +%s) - t_all )) s" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
