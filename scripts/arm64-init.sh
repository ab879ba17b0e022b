#!/bin/busybox sh
# /init of the emulated ARM64 TV (scripts/arm64.sh run puts it in the
# initramfs; busybox sh). Runs the TV crates' test executables, then the
# daemon checks, prints `ARM64 CHECK <name> ok|FAIL ...` per check and
# `ARM64 RESULT pass|fail`, and powers off. Not meant to run anywhere else.
/bin/busybox --install -s /bin
export PATH=/bin:/tv/bin LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev # busybox's `&` needs /dev/null
mount -t tmpfs -o size=1536m tmp /tmp
ip link set lo up
export HOME=/tmp TMPDIR=/tmp OMEGA_MODEL_DIR=/model OMEGA_SHARED_DIR=/shared RUST_BACKTRACE=1
. /tv/settings # CATALOG_ITEMS

fails=0
check() { # name ok|FAIL detail...
  name="$1" status="$2"; shift 2
  echo "ARM64 CHECK $name $status $*"
  [ "$status" = ok ] || fails=$((fails + 1))
}
# Seconds since boot with hundredths (busybox date has whole seconds only).
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# poll CONDITION-COMMAND SECONDS: true once the command succeeds, false at the deadline.
poll() {
  t0=$(now)
  while ! eval "$1" >/dev/null 2>&1; do
    [ "$(awk -v a="$t0" -v b="$(now)" -v s="$2" 'BEGIN { print (b - a > s) }')" = 1 ] && return 1
    sleep 0.1
  done
}
# JSON number field from one line of JSON (the daemon's compact answers).
field() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p" | head -1; }
rss() { awk '/^VmRSS|^VmHWM/ { printf "%s %s MiB ", $1, int($2 / 1024) }' "/proc/$1/status"; }

echo "ARM64 INFO $(uname -m) $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB; $(grep -m1 '^Features' /proc/cpuinfo)"
echo "ARM64 INFO timings below are under qemu's emulation, not ARM timings"

# ---- the TV crates' tests (release builds of cargo test's executables)
for t in /tv/tests/*; do
  name=$(basename "$t")
  t0=$(now)
  if "$t" --test-threads=2 >/tmp/test.out 2>&1; then
    check "test:$name" ok "$(grep '^test result' /tmp/test.out | tail -1) ($(elapsed "$t0") s)"
  else
    tail -n 60 /tmp/test.out
    check "test:$name" FAIL "$(grep '^test result' /tmp/test.out | tail -1) ($(elapsed "$t0") s)"
  fi
done

# ---- embeddings against the reference, at the issue's cosine >= 0.9999
ref=$(ls /tv/tests/omega-embed-test-reference 2>/dev/null)
if [ -n "$ref" ] && "$ref" --nocapture >/tmp/ref.out 2>&1; then
  line=$(grep 'min cosine' /tmp/ref.out)
  single=$(echo "$line" | sed -n 's/.*one at a time \([0-9.]*\).*/\1/p')
  batched=$(echo "$line" | sed -n 's/.*batched \([0-9.]*\).*/\1/p')
  if awk -v a="$single" -v b="$batched" 'BEGIN { exit !(a >= 0.9999 && b >= 0.9999) }'; then
    check embeddings-cosine ok "one at a time $single, batched $batched"
  else
    check embeddings-cosine FAIL "$line"
  fi
else
  tail -n 30 /tmp/ref.out 2>/dev/null
  check embeddings-cosine FAIL "the reference test did not run or failed"
fi

# ---- the daemon (release build, as shipped)
D=/tmp/tv
mkdir -p "$D/import"
cp /tv/catalog.jsonl "$D/import/"
printf 'catalog_import_dir = "%s/import"\n' "$D" >"$D/config.toml"
export OMEGA_SOCKET="$D/data/brain.sock"
ctl() { omega-brainctl --json "$@"; }
PID=
start_daemon() { # data dir
  t0=$(now)
  omega-braind --data-dir "$1" --model-dir /model --config "$D/config.toml" 2>>"$D/braind.log" &
  PID=$!
  # Ends early when the daemon exits.
  if poll "ctl health || ! kill -0 $PID" 60 && kill -0 "$PID" 2>/dev/null; then
    echo "ARM64 INFO omega-braind answering $(elapsed "$t0") s after start"
  else
    cat "$D/braind.log"
    return 1
  fi
}

if start_daemon "$D/data"; then
  h=$(ctl health)
  echo "ARM64 INFO health $h"
  case "$h" in
    *'"store":"created"'*) check health ok "cpu: $(echo "$h" | sed -n 's/.*"cpu":\({[^}]*}\).*/\1/p') index_isa: $(echo "$h" | sed -n 's/.*"index_isa":"\([^"]*\)".*/\1/p')" ;;
    *) check health FAIL "$h" ;;
  esac
  # NEON, not a scalar fallback: the embedder's kernels must dispatch to NEON;
  # usearch's int8 distance may be `serial` only on a CPU without dotprod
  # (Cortex-A53/A73: numkong's int8 NEON kernels need it).
  isa=$(echo "$h" | sed -n 's/.*"index_isa":"\([^"]*\)".*/\1/p')
  case "$h" in
    *'"embed_kernels":"neon"'*)
      if [ "$isa" = serial ] && echo "$h" | grep -q '"dotprod"'; then
        check simd FAIL "the CPU has dotprod but the index distance is serial: $h"
      else
        check simd ok "embed kernels neon; index int8 distance $isa$( [ "$isa" = serial ] && echo ' (no dotprod on this CPU)')"
      fi ;;
    *) check simd FAIL "$h" ;;
  esac
  echo "ARM64 INFO rss after start: $(rss "$PID")"

  t0=$(now)
  r=$(ctl catalog-import "$D/import/catalog.jsonl")
  case "$r" in
    *'"catalog_items":36'*) check catalog-import ok "$r ($(elapsed "$t0") s)" ;;
    *) check catalog-import FAIL "$r" ;;
  esac
  echo "ARM64 INFO rss after the model load and 36 items: $(rss "$PID")"

  if r=$(ctl observe t1 --fraction 0.9 --at 1700000000 --hour 20 --weekday 2 2>&1) \
    && [ "$(ctl stats | field episodes)" = 1 ]; then
    check observe ok "$r"
  else
    check observe FAIL "$r"
  fi

  r=$(ctl recommend --hour 20 --weekday 2 --recent t1 --k 5)
  n=$(echo "$r" | grep -o '"confidence"' | wc -l)
  if [ "$n" = 5 ]; then check recommend ok "$r"; else check recommend FAIL "$r"; fi
  t0=$(now)
  r=$(ctl recommend --hour 20 --weekday 2 --mood "something funny and animated" --k 5)
  n=$(echo "$r" | grep -o '"confidence"' | wc -l)
  if [ "$n" = 5 ]; then check recommend-mood ok "$r ($(elapsed "$t0") s)"; else check recommend-mood FAIL "$r"; fi

  # kill -9 during a stream of observes: every acknowledged one survives.
  before=$(ctl stats | field episodes)
  : >"$D/acked"
  (
    i=1
    while [ "$i" -lt 900 ]; do # below the store's default max_episodes (1000)
      omega-brainctl observe "t$((i % 36))" --fraction 0.9 --at $((1700000000 + i)) --hour 20 --weekday 2 >/dev/null 2>&1 || break
      echo "$((1700000000 + i))" >>"$D/acked"
      i=$((i + 1))
    done
  ) &
  W=$!
  poll "[ \$(wc -l <$D/acked) -ge 40 ]" 120
  kill -9 "$PID"
  wait "$W"
  acked=$(wc -l <"$D/acked")
  if start_daemon "$D/data"; then
    after=$(ctl stats | field episodes)
    h=$(ctl health)
    # Each observe has its own `at`; the one in flight at the kill may or may not be kept.
    if [ "$acked" -ge 40 ] && [ "$after" -ge $((before + acked)) ] && [ "$after" -le $((before + acked + 1)) ] \
      && echo "$h" | grep -q '"store":"opened"'; then
      check kill-9 ok "$acked observes acknowledged before kill -9, episodes $before -> $after after restart"
    else
      check kill-9 FAIL "acked $acked, episodes before $before, after $after, health $h"
    fi
    kill "$PID"; wait "$PID"
  else
    check kill-9 FAIL "the daemon did not restart"
  fi

  # Memory with a large catalog (fresh store).
  if [ "$CATALOG_ITEMS" -gt 0 ]; then
    cp /tv/catalog-big.jsonl "$D/import/"
    if start_daemon "$D/big"; then
      t0=$(now)
      r=$(ctl catalog-import "$D/import/catalog-big.jsonl")
      case "$r" in
        *"\"catalog_items\":$CATALOG_ITEMS"*) check "catalog-$CATALOG_ITEMS" ok "imported in $(elapsed "$t0") s; $(rss "$PID")" ;;
        *) check "catalog-$CATALOG_ITEMS" FAIL "$r" ;;
      esac
      t0=$(now)
      r=$(ctl recommend --hour 20 --weekday 2 --recent t1 --k 10)
      n=$(echo "$r" | grep -o '"confidence"' | wc -l)
      if [ "$n" = 10 ]; then check "recommend-$CATALOG_ITEMS" ok "$(elapsed "$t0") s; $(rss "$PID")"; else check "recommend-$CATALOG_ITEMS" FAIL "$r"; fi
      kill "$PID"; wait "$PID"
    else
      check "catalog-$CATALOG_ITEMS" FAIL "the daemon did not start"
    fi
  fi
else
  check daemon-start FAIL "no answer within 60 s"
fi

if [ "$fails" = 0 ]; then echo "ARM64 RESULT pass"; else echo "ARM64 RESULT fail ($fails checks failed)"; fi
sync
poweroff -f
