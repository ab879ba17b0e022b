#!/usr/bin/env bash
# One Apache Cassandra node on 127.0.0.1 for the ScyllaDB store's tests
# (actors/constellation/tests/store_scylla.rs): Cassandra speaks the same CQL
# and, unlike ScyllaDB, installs from Maven Central.
#
#   scripts/cassandra.sh start    fetch once (cached), start, wait until CQL answers
#   scripts/cassandra.sh stop     SIGTERM the recorded pid, SIGKILL after a deadline
#   scripts/cassandra.sh status   running and answering CQL, or not (exit 1)
#
# Everything lives under .cassandra/ (ignored by git): pom.xml and lib/ (the
# jars), conf/, data/, logs/cassandra.log, cassandra.pid. Needs Java 11 or 17
# and Maven. Overrides: CASSANDRA_VERSION, CASSANDRA_HEAP_MAX (at most 1g
# here), CASSANDRA_PORT (CQL, 9042), CASSANDRA_START_TIMEOUT (seconds, 240).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="${CASSANDRA_VERSION:-5.0.9}"
heap_max="${CASSANDRA_HEAP_MAX:-1g}"
port="${CASSANDRA_PORT:-9042}"
start_timeout="${CASSANDRA_START_TIMEOUT:-240}"
stop_timeout=60
home="$PWD/.cassandra"
lib="$home/lib"
pidfile="$home/cassandra.pid"
log="$home/logs/cassandra.log"

# Answers 0 when `SELECT release_version FROM system.local` returns a row on
# 127.0.0.1:$port (CQL native protocol v4, no driver needed); prints the version.
cql_release_version() {
  python3 - "$port" <<'PY'
import socket, struct, sys

def frame(opcode, body):
    return struct.pack(">BBhBi", 4, 0, 0, opcode, len(body)) + body

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("connection closed")
        out += chunk
    return out

def read_frame(s):
    _, _, _, opcode, length = struct.unpack(">BBhBi", recv_exact(s, 9))
    return opcode, recv_exact(s, length)

def string(b):
    return struct.pack(">H", len(b)) + b

try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(frame(0x01, struct.pack(">H", 1) + string(b"CQL_VERSION") + string(b"3.0.0")))
    opcode, _ = read_frame(s)
    if opcode != 0x02:  # READY
        sys.exit(1)
    query = b"SELECT release_version FROM system.local"
    # QUERY: [long string] query, consistency ONE, no flags.
    s.sendall(frame(0x07, struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0)))
    opcode, body = read_frame(s)
    if opcode != 0x08 or struct.unpack(">i", body[:4])[0] != 2:  # RESULT, Rows
        sys.exit(1)
    pos = 4
    flags, columns = struct.unpack(">ii", body[pos:pos + 8]); pos += 8
    def skip_string(p):
        (n,) = struct.unpack(">H", body[p:p + 2]); return p + 2 + n
    if flags & 0x0002:  # has_more_pages: paging state
        (n,) = struct.unpack(">i", body[pos:pos + 4]); pos += 4 + max(n, 0)
    if flags & 0x0001:  # global table spec
        pos = skip_string(skip_string(pos))
    for _ in range(columns):
        if not flags & 0x0001:
            pos = skip_string(skip_string(pos))
        pos = skip_string(pos)
        pos += 2  # type id (varchar)
    (rows,) = struct.unpack(">i", body[pos:pos + 4]); pos += 4
    if rows < 1:
        sys.exit(1)
    (n,) = struct.unpack(">i", body[pos:pos + 4]); pos += 4
    print(body[pos:pos + n].decode())
except (OSError, struct.error, UnicodeDecodeError):
    sys.exit(1)
PY
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

fetch() {
  if [ -f "$lib/.complete-$version" ]; then
    return 0
  fi
  echo "== fetching Cassandra $version and its dependencies with Maven into $lib"
  mkdir -p "$home"
  rm -rf "$lib"
  cat >"$home/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>omega.test</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$version</version>
      <exclusions>
        <!-- A legacy client it pulls in; the server does not need it. -->
        <exclusion>
          <groupId>com.datastax.cassandra</groupId>
          <artifactId>cassandra-driver-core</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
POM
  mkdir -p "$home/logs"
  if ! mvn -B -f "$home/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" >"$home/logs/maven.log" 2>&1; then
    echo "error: Maven could not fetch Cassandra $version; log: $home/logs/maven.log" >&2
    tail -n 20 "$home/logs/maven.log" >&2 || true
    return 1
  fi
  touch "$lib/.complete-$version"
}

write_conf() {
  mkdir -p "$home/conf" "$home/data" "$home/logs"
  cat >"$home/conf/cassandra.yaml" <<YAML
# One test node on 127.0.0.1 (written by scripts/cassandra.sh).
cluster_name: omega-test
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:7000"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: 7000
native_transport_port: $port
endpoint_snitch: SimpleSnitch
auto_snapshot: false
concurrent_compactors: 1
# One device sync (up to 1024 patterns) or region publication is one
# single-partition batch of up to ~150 KB (ScyllaDB's default limit is 1 MiB).
batch_size_warn_threshold: 256KiB
batch_size_fail_threshold: 1024KiB
YAML
  cat >"$home/conf/logback.xml" <<'XML'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
XML
}

start() {
  if status; then
    return 0
  fi
  if ! running_pid >/dev/null; then
    if cql_release_version >/dev/null; then
      echo "error: something else answers CQL on 127.0.0.1:$port (not started by this script)" >&2
      return 1
    fi
    command -v java >/dev/null || { echo "error: java not found (Java 11 or 17 needed)" >&2; return 1; }
    command -v mvn >/dev/null || { echo "error: mvn not found" >&2; return 1; }
    fetch
    write_conf
    # The JPMS and Netty options of Cassandra's conf/jvm17-server.options;
    # without them startup dies early. An explicit small heap: the default
    # takes up to a quarter of the RAM.
    local jvm=(
      -Xms512m "-Xmx$heap_max" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
      -XX:+ExitOnOutOfMemoryError
      -Djdk.attach.allowAttachSelf=true
      --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
      --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
      --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
      --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
      --add-exports java.sql/java.sql=ALL-UNNAMED
      --add-exports java.base/java.lang.ref=ALL-UNNAMED
      --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
      --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
      --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
      --add-opens java.base/java.lang.module=ALL-UNNAMED
      --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
      --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
      --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
      --add-opens java.base/jdk.internal.math=ALL-UNNAMED
      --add-opens java.base/jdk.internal.module=ALL-UNNAMED
      --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
      --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
      --add-opens java.base/sun.nio.ch=ALL-UNNAMED
      --add-opens java.base/java.io=ALL-UNNAMED
      --add-opens java.base/java.lang.reflect=ALL-UNNAMED
      --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
      --add-opens java.base/java.lang=ALL-UNNAMED
      --add-opens java.base/java.util=ALL-UNNAMED
      -Dio.netty.tryReflectionSetAccessible=true
      -Dio.netty.allocator.useCacheForAllThreads=true
      -Dio.netty.allocator.maxOrder=11
      "-Dcassandra.config=file://$home/conf/cassandra.yaml"
      "-Dcassandra.storagedir=$home/data"
      "-Dcassandra.logdir=$home/logs"
      "-Dlogback.configurationFile=$home/conf/logback.xml"
      -Dcassandra-foreground=yes
      -Dcassandra.skip_wait_for_gossip_to_settle=0
      -Dcassandra.jmx.local.port=7199
    )
    : >"$log"
    # setsid: its own session, so the caller's job control or terminal
    # signals do not reach it; stopped only through the pid below.
    setsid java "${jvm[@]}" -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
      >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "Cassandra $version starting (pid $!, heap $heap_max), log $log"
  fi
  local began deadline
  began=$(date +%s)
  deadline=$((began + start_timeout))
  while true; do
    if v=$(cql_release_version); then
      echo "Cassandra $v answers CQL on 127.0.0.1:$port after $(( $(date +%s) - began )) s"
      return 0
    fi
    if ! running_pid >/dev/null; then
      echo "error: Cassandra exited during startup; log: $log" >&2
      tail -n 30 "$log" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: Cassandra did not answer CQL within $start_timeout s; log: $log" >&2
      tail -n 30 "$log" >&2 || true
      return 1
    fi
    sleep 1
  done
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    echo "Cassandra is not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$(( $(date +%s) + stop_timeout ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "Cassandra (pid $pid) still running after $stop_timeout s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  rm -f "$pidfile"
  echo "Cassandra stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(running_pid); then
    if v=$(cql_release_version); then
      echo "Cassandra $v running (pid $pid), CQL on 127.0.0.1:$port"
      return 0
    fi
    echo "Cassandra process $pid running, CQL not answering; log: $log"
    return 1
  fi
  echo "Cassandra is not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
