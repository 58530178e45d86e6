#!/bin/sh
# install_test.sh - `make install` / `make uninstall` into a scratch DESTDIR:
# the FHS layout, the unit's rewritten paths, the installed binary checking
# the installed config, an existing config kept, uninstall leaving the
# operator's config. Run from the top of the tree (make test-install).
set -eu

BUILD=${BUILD:-build}
MAKE=${MAKE:-make}
dest=$(mktemp -d /tmp/fp-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
fails=0
fail() { echo "FAIL install: $*"; fails=$((fails + 1)); }
has() { [ -e "$dest$1" ] || fail "missing $1"; }

$MAKE --no-print-directory -s install DESTDIR="$dest" BUILD="$BUILD" >"$dest.log" 2>&1 ||
    { cat "$dest.log"; rm -f "$dest.log"; echo "FAIL install: make install failed"; exit 1; }

for f in /usr/local/bin/floorpost /usr/local/lib/systemd/system/floorpost.service \
         /etc/floorpost/floorpost.ini /usr/local/share/floorpost/floorpost.ini \
         /usr/local/share/floorpost/schema/telemetry.fbs \
         /usr/local/share/floorpost/schema/checkpoint.fbs \
         /usr/local/share/floorpost/floorpost-rules.yml /usr/local/share/floorpost/grafana-floorpost.json \
         /usr/local/share/doc/floorpost/README.md /usr/local/share/doc/floorpost/operations.md \
         /usr/local/share/doc/floorpost/subscribers.md \
         /usr/local/share/doc/floorpost/examples/subscriber.py \
         /usr/local/share/doc/floorpost/examples/subscriber.c; do
    has "$f"
done
[ -x "$dest/usr/local/bin/floorpost" ] || fail "binary not executable"

# The gateway library links alone: a gateway built from the installed header
# and library only (no source tree on the include path).
has /usr/local/include/floorpost/producer.h
has /usr/local/lib/libfloorpost-gateway.a
if cc -std=c11 -Wall -Wextra -Werror -I"$dest/usr/local/include" -o "$dest/gateway_min" \
      tests/gateway/gateway_min.c "$dest/usr/local/lib/libfloorpost-gateway.a" \
      ${GATEWAY_LIBS:--lzmq -lflatbuffers -lstdc++} >"$dest/cc.log" 2>&1; then
    out=$("$dest/gateway_min" 2>&1) || fail "gateway_min: $out"
else
    fail "the gateway library does not link alone: $(cat "$dest/cc.log")"
fi
# The subscriber library: the installed example and a callback-API
# subscriber built with pkg-config from the installed files only, then run
# against the installed floorpost (the demo plant, on free loopback ports).
for f in subscriber.h domain.h codec.h curve.h record.h; do has /usr/local/include/floorpost/$f; done
has /usr/local/lib/pkgconfig/floorpost.pc
pcflags=$(PKG_CONFIG_PATH="$dest/usr/local/lib/pkgconfig" pkg-config \
    --define-variable=prefix="$dest/usr/local" --cflags --libs floorpost) ||
    fail "pkg-config --cflags --libs floorpost"
case "$pcflags" in *"-I$dest/usr/local/include"*"-lfloorpost-gateway"*) ;;
    *) fail "pkg-config said: $pcflags" ;; esac
built=1
for src in "$dest/usr/local/share/doc/floorpost/examples/subscriber.c" tests/gateway/subscriber_min.c; do
    # shellcheck disable=SC2086 # pkg-config's words
    cc -std=c11 -Wall -Wextra -Werror -o "$dest/$(basename "$src" .c)" "$src" $pcflags \
        >"$dest/cc.log" 2>&1 || { fail "cc $src with pkg-config: $(cat "$dest/cc.log")"; built=0; }
done
if [ "$built" = 1 ]; then
    # shellcheck disable=SC2046 # four port numbers
    # (tests/e2e/ports.py: below the ephemeral range, see there why)
    set -- $(python3 -c 'import sys
sys.path.insert(0, "tests/e2e")
from ports import free_port
print(" ".join(str(free_port()) for _ in range(4)))')
    mkdir -p "$dest/state"
    printf '%s\n' "[service]" "instance = install-test" "ingest_router = tcp://127.0.0.1:$1" \
        'ingest_pull = ""' "publish = tcp://127.0.0.1:$2" "deadletter = tcp://127.0.0.1:$3" \
        "replay = tcp://127.0.0.1:$4" "feed_heartbeat_ms = 200" \
        "[aggregate]" "posting_interval_ms = 100" \
        "[durability]" "state_dir = \"$dest/state\"" "map_size_mb = 64" \
        "[metrics]" "metrics_port = 0" "[demo]" "demo = true" "demo_rate = 500" >"$dest/run.ini"
    "$dest/usr/local/bin/floorpost" run -c "$dest/run.ini" >/dev/null 2>"$dest/fp.log" &
    fp_pid=$!
    for _ in $(seq 100); do grep -q 'msg="running"' "$dest/fp.log" && break; sleep 0.1; done
    out=$(timeout 30 "$dest/subscriber" --count 3 --timeout 10000 "tcp://127.0.0.1:$2" 2>/dev/null) ||
        fail "the installed example against the installed floorpost"
    [ "$(printf '%s\n' "$out" | grep -c ' topic=.* seq=.* event_id=install-test-')" = 3 ] ||
        fail "the installed example printed: $out"
    out=$(timeout 30 "$dest/subscriber_min" "tcp://127.0.0.1:$2" "tcp://127.0.0.1:$4" 20 2>&1) ||
        fail "subscriber_min against the installed floorpost: $out $(tail -5 "$dest/fp.log")"
    # the example's events are committed by now: the catch-up replays them
    case "$out" in *"20 events, 0 wrong, 0 replayed"*) fail "subscriber_min replayed nothing: $out" ;;
        *"20 events, 0 wrong"*) ;; *) fail "subscriber_min said: $out" ;; esac
    kill "$fp_pid"
    wait "$fp_pid" || fail "floorpost's exit code after SIGTERM: $(tail -5 "$dest/fp.log")"
fi

grep -q "^kept\|^installed $dest/etc/floorpost/floorpost.ini" "$dest.log" ||
    fail "install did not report the config: $(cat "$dest.log")"
unit="$dest/usr/local/lib/systemd/system/floorpost.service"
grep -qx "ExecStart=/usr/local/bin/floorpost run -c /etc/floorpost/floorpost.ini" "$unit" ||
    fail "ExecStart in $unit"
grep -qx "ExecStartPre=/usr/local/bin/floorpost run --check -c /etc/floorpost/floorpost.ini" "$unit" ||
    fail "ExecStartPre in $unit"

# The installed binary accepts the installed config.
out=$("$dest/usr/local/bin/floorpost" run --check -c "$dest/etc/floorpost/floorpost.ini") ||
    fail "run --check on the installed config: $out"
case "$out" in *": ok ("*) ;; *) fail "run --check said: $out" ;; esac

# The unit is valid for systemd (its binary path pointed into DESTDIR).
if command -v systemd-analyze >/dev/null 2>&1; then
    sed "s|/usr/local/bin/floorpost|$dest/usr/local/bin/floorpost|; s|/etc/floorpost/|$dest/etc/floorpost/|g" \
        "$unit" >"$dest/floorpost.service"
    systemd-analyze verify "$dest/floorpost.service" >"$dest/verify.log" 2>&1 ||
        fail "systemd-analyze verify: $(cat "$dest/verify.log")"
fi

# A second install keeps the operator's config.
echo "# edited by the operator" >>"$dest/etc/floorpost/floorpost.ini"
$MAKE --no-print-directory -s install DESTDIR="$dest" BUILD="$BUILD" >"$dest.log" 2>&1 ||
    fail "second install failed: $(cat "$dest.log")"
grep -q "edited by the operator" "$dest/etc/floorpost/floorpost.ini" || fail "config overwritten"
grep -q "^kept" "$dest.log" || fail "second install did not say it kept the config"

# PREFIX=/usr: the distribution layout.
$MAKE --no-print-directory -s install DESTDIR="$dest" BUILD="$BUILD" PREFIX=/usr >/dev/null 2>&1 ||
    fail "install PREFIX=/usr failed"
grep -qx "ExecStart=/usr/bin/floorpost run -c /etc/floorpost/floorpost.ini" \
    "$dest/usr/lib/systemd/system/floorpost.service" || fail "PREFIX=/usr unit"
has /usr/bin/floorpost
has /usr/share/floorpost/schema/checkpoint.fbs

# Uninstall removes what install placed, and keeps the config.
$MAKE --no-print-directory -s uninstall DESTDIR="$dest" >/dev/null 2>&1 || fail "uninstall failed"
for f in /usr/local/bin/floorpost /usr/local/lib/systemd/system/floorpost.service \
         /usr/local/share/floorpost /usr/local/share/doc/floorpost \
         /usr/local/include/floorpost /usr/local/lib/libfloorpost-gateway.a \
         /usr/local/lib/pkgconfig/floorpost.pc; do
    [ ! -e "$dest$f" ] || fail "uninstall left $f"
done
has /etc/floorpost/floorpost.ini

rm -f "$dest.log"
if [ "$fails" -ne 0 ]; then
    echo "install_test: $fails failures"
    exit 1
fi
echo "install_test: ok (layout, gateway library links alone, subscribers built with pkg-config against the installed floorpost, unit paths, run --check, systemd-analyze verify, config kept, uninstall)"
