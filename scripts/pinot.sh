#!/usr/bin/env bash
# Local single-node Apache Pinot (ZooKeeper + controller + broker + server) run straight from the
# Maven Central jars that `make pinot-jars` copies into build/pinot/lib. No Docker needed.
#
#   scripts/pinot.sh up       start in the background and return once ZooKeeper answers, and the
#                             controller, broker and server report healthy; a no-op when running
#   scripts/pinot.sh down     SIGTERM, wait up to 30 s, then SIGKILL (Pinot, then ZooKeeper); a
#                             no-op when not running
#   scripts/pinot.sh status   exit 0 when everything is running and healthy, 1 otherwise
#
# Two JVMs: ZooKeeper (ZooKeeperServerMain, bound to 127.0.0.1) and one Pinot JVM that runs the
# controller, the broker and the server (PinotAdministrator StartServiceManager with one config
# file per role): one JVM's baseline memory and start-up work instead of three, which matters on 2
# cores; the roles still talk to each other through ZooKeeper/Helix and HTTP as when separate.
#
# Environment (one cluster per controller port):
#   PINOT_CONTROLLER_PORT     controller REST API / UI (default 9000)
#   PINOT_BROKER_PORT         broker query API, POST /query/sql (default 8099)
#   PINOT_ZK_PORT             ZooKeeper client port (default 2181)
#   PINOT_SERVER_PORT         server query port, broker -> server (default 8098)
#   PINOT_SERVER_ADMIN_PORT   server admin/health API (default 8097)
#   PINOT_HEAP_OPTS           heap of the Pinot JVM (default -Xms256m -Xmx1g)
#   PINOT_ZK_HEAP_OPTS        heap of the ZooKeeper JVM (default -Xms32m -Xmx128m)
#   PINOT_JIT_OPTS            JIT options of the Pinot JVM (default -XX:TieredStopAtLevel=1: C1
#                             only; `up` took 30-40% less time on 2 busy cores, and queries over
#                             small test data do not notice. For benchmarks: -XX:TieredStopAtLevel=4)
#   PINOT_JAVA_OPTS           extra JVM options for the Pinot JVM (default none)
#   PINOT_READY_TIMEOUT       seconds `up` waits for readiness (default 120)
#   JAVA_HOME                 optional; otherwise `java` from PATH
#
# Listeners: ZooKeeper and the HTTP APIs (controller, broker, server admin) bind 127.0.0.1 and
# every role registers itself in Helix as 127.0.0.1. Pinot 0.11 cannot choose the bind address of
# the server's Netty query port (PINOT_SERVER_PORT): it listens on all interfaces. The server's
# gRPC query port and the multi-stage engine ports are disabled.
#
# State lives in .local/pinot-$PINOT_CONTROLLER_PORT/ under the repository root (git-ignored):
#   zk/          ZooKeeper data (cluster metadata, table configs, schemas)
#   controller/  controller data dir (completed real-time segments: the "deep store")
#   server/      server index and segment tar dirs
#   conf/        zoo.cfg, controller.conf, broker.conf, server.conf, log4j2.xml (regenerated on
#                every start)
#   logs/        pinot.log, zookeeper.log (log4j2), pinot.out, zookeeper.out (JVM stdout/stderr)
#   pinot.pid, zookeeper.pid
# Delete that directory (after `down`) to start from an empty cluster.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINOT_CONTROLLER_PORT="${PINOT_CONTROLLER_PORT:-9000}"
PINOT_BROKER_PORT="${PINOT_BROKER_PORT:-8099}"
PINOT_ZK_PORT="${PINOT_ZK_PORT:-2181}"
PINOT_SERVER_PORT="${PINOT_SERVER_PORT:-8098}"
PINOT_SERVER_ADMIN_PORT="${PINOT_SERVER_ADMIN_PORT:-8097}"
PINOT_HEAP_OPTS="${PINOT_HEAP_OPTS:--Xms256m -Xmx1g}"
PINOT_ZK_HEAP_OPTS="${PINOT_ZK_HEAP_OPTS:--Xms32m -Xmx128m}"
PINOT_JIT_OPTS="${PINOT_JIT_OPTS:--XX:TieredStopAtLevel=1}"
PINOT_JAVA_OPTS="${PINOT_JAVA_OPTS:-}"
PINOT_READY_TIMEOUT="${PINOT_READY_TIMEOUT:-120}"
HOST=127.0.0.1
CLUSTER=PinotCluster

LIB_DIR="$ROOT/build/pinot/lib"
STATE="$ROOT/.local/pinot-$PINOT_CONTROLLER_PORT"
CONF="$STATE/conf"
LOGS="$STATE/logs"
ZK_CFG="$CONF/zoo.cfg"
CONTROLLER_CONF="$CONF/controller.conf"
BROKER_CONF="$CONF/broker.conf"
SERVER_CONF="$CONF/server.conf"
LOG4J="$CONF/log4j2.xml"
ZK_PIDFILE="$STATE/zookeeper.pid"
PINOT_PIDFILE="$STATE/pinot.pid"
PORTS_FILE="$STATE/ports"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

# Pinot 0.11 predates JDK 17: it maps segments through sun.nio.ch/DirectByteBuffer internals and
# reflects into java.base. Open exactly those packages to the unnamed module.
JDK17_OPTS=(
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-exports=java.base/sun.nio.ch=ALL-UNNAMED
)

log() { echo "pinot.sh[$PINOT_CONTROLLER_PORT]: $*"; }
# shellcheck source=scripts/lib/proc.sh
source "$ROOT/scripts/lib/proc.sh"
die() {
    echo "pinot.sh[$PINOT_CONTROLLER_PORT]: error: $*" >&2
    exit 1
}

require_jars() {
    if ! compgen -G "$LIB_DIR/pinot-tools-*.jar" >/dev/null; then
        die "no Pinot jars in $LIB_DIR; run make pinot-jars"
    fi
    command -v "$JAVA" >/dev/null || die "java not found (install a JDK 17+ or set JAVA_HOME)"
    command -v curl >/dev/null || die "curl not found"
}

zk_pid() { pid_of "$ZK_PIDFILE" "ZooKeeperServerMain $ZK_CFG"; }
pinot_pid() { pid_of "$PINOT_PIDFILE" "-bootstrapConfigPaths $CONTROLLER_CONF"; }

# ZooKeeper's four-letter "ruok" answers "imok" once it serves clients.
zk_ok() {
    local reply
    reply="$(
        {
            exec 3<>"/dev/tcp/$HOST/$PINOT_ZK_PORT" || exit 1
            printf ruok >&3
            timeout 2 cat <&3
        } 2>/dev/null
    )" || return 1
    [[ "$reply" == imok ]]
}

http_ok() {
    [[ "$(curl -fsS --max-time 2 "http://$HOST:$1$2" 2>/dev/null)" == OK ]]
}

controller_ok() { http_ok "$PINOT_CONTROLLER_PORT" /health; }
broker_ok() { http_ok "$PINOT_BROKER_PORT" /health; }
server_ok() { http_ok "$PINOT_SERVER_ADMIN_PORT" /health/readiness; }
all_ok() { zk_ok && controller_ok && broker_ok && server_ok; }

write_config() {
    mkdir -p "$CONF" "$LOGS" "$STATE/zk" "$STATE/controller" "$STATE/server/index" \
        "$STATE/server/segments" "$STATE/tmp"

    cat >"$ZK_CFG" <<EOF
# Generated by scripts/pinot.sh on every start; edits are overwritten.
dataDir=$STATE/zk
clientPort=$PINOT_ZK_PORT
clientPortAddress=$HOST
tickTime=2000
initLimit=10
syncLimit=5
maxClientCnxns=0
# No Jetty admin server (it would take port 8080); ruok is the readiness probe.
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF

    cat >"$CONTROLLER_CONF" <<EOF
# Generated by scripts/pinot.sh on every start; edits are overwritten.
pinot.service.role=CONTROLLER
controller.zk.str=$HOST:$PINOT_ZK_PORT
controller.helix.cluster.name=$CLUSTER
controller.host=$HOST
controller.vip.host=$HOST
# One listener bound to 127.0.0.1 (controller.port would bind 0.0.0.0).
controller.access.protocols=http
controller.access.protocols.http.host=$HOST
controller.access.protocols.http.port=$PINOT_CONTROLLER_PORT
controller.access.protocols.http.vip=true
controller.data.dir=$STATE/controller
controller.local.temp.dir=$STATE/tmp/controller
controller.mode=dual
EOF

    cat >"$BROKER_CONF" <<EOF
# Generated by scripts/pinot.sh on every start; edits are overwritten.
pinot.service.role=BROKER
pinot.zk.server=$HOST:$PINOT_ZK_PORT
pinot.cluster.name=$CLUSTER
pinot.broker.hostname=$HOST
pinot.broker.client.access.protocols=http
pinot.broker.client.access.protocols.http.host=$HOST
pinot.broker.client.access.protocols.http.port=$PINOT_BROKER_PORT
pinot.broker.instance.id=Broker_${HOST}_$PINOT_BROKER_PORT
# Stop at once on SIGTERM (default: wait 10 s for a load balancer to drain).
pinot.broker.delayShutdownTimeMs=0
pinot.broker.timeoutMs=30000
EOF

    cat >"$SERVER_CONF" <<EOF
# Generated by scripts/pinot.sh on every start; edits are overwritten.
pinot.service.role=SERVER
pinot.zk.server=$HOST:$PINOT_ZK_PORT
pinot.cluster.name=$CLUSTER
pinot.server.netty.host=$HOST
pinot.server.netty.port=$PINOT_SERVER_PORT
pinot.server.instance.id=Server_${HOST}_$PINOT_SERVER_PORT
pinot.server.adminapi.access.protocols=http
pinot.server.adminapi.access.protocols.http.host=$HOST
pinot.server.adminapi.access.protocols.http.port=$PINOT_SERVER_ADMIN_PORT
pinot.server.grpc.enable=false
pinot.server.swagger.enabled=false
pinot.server.instance.dataDir=$STATE/server/index
pinot.server.instance.segmentTarDir=$STATE/server/segments
pinot.server.instance.realtime.alloc.offheap=true
# Data table v4 carries null bitmaps: needed for queries with SET enableNullHandling=true
# (AVG, SUM, ... skipping NULLs). Pinot 0.11 defaults to v3 and rejects those queries.
pinot.server.instance.currentDataTableVersion=4
# Startup: poll the service status every 0.5 s instead of every 10 s.
pinot.server.startup.serviceStatusCheckIntervalMs=500
pinot.server.startup.timeoutMs=120000
# Shutdown: no query draining for a load balancer; stop within 10 s.
pinot.server.shutdown.enableQueryCheck=false
pinot.server.shutdown.timeoutMs=10000
EOF

    cat >"$LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/pinot.sh on every start; edits are overwritten. -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="${sys:pinot.logs.dir}/${sys:pinot.log.name}.log"
                 filePattern="${sys:pinot.logs.dir}/${sys:pinot.log.name}.log.%i">
      <PatternLayout pattern="%d{yyyy/MM/dd HH:mm:ss.SSS} %p [%c{1}] [%t] %m%n"/>
      <SizeBasedTriggeringPolicy size="50MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO">
      <AppenderRef ref="file"/>
    </Root>
    <Logger name="org.apache.helix" level="WARN"/>
    <Logger name="org.apache.zookeeper" level="WARN"/>
    <Logger name="org.I0Itec.zkclient" level="WARN"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="org.reflections" level="ERROR"/>
    <!-- Known noise of a single-node cluster: Helix probing ZooKeeper's own /zookeeper node as
         a cluster, state-model resets on shutdown, hand-off reports without a previous master,
         and the Kafka consumer listing Pinot's stream.* keys it was handed as unknown. -->
    <Logger name="org.apache.helix.manager.zk.ZKUtil" level="ERROR"/>
    <Logger name="org.apache.helix.participant.statemachine.StateModel" level="ERROR"/>
    <Logger name="org.apache.helix.controller.stages.TopStateHandoffReportStage" level="ERROR"/>
    <Logger name="org.apache.helix.monitoring.mbeans.ResourceMonitor" level="ERROR"/>
    <Logger name="org.apache.helix.ConfigAccessor" level="ERROR"/>
    <Logger name="org.apache.kafka.clients.consumer.ConsumerConfig" level="ERROR"/>
  </Loggers>
</Configuration>
EOF
    printf '%s\n' "zk=$PINOT_ZK_PORT" "controller=$PINOT_CONTROLLER_PORT" \
        "broker=$PINOT_BROKER_PORT" "server=$PINOT_SERVER_PORT" \
        "server_admin=$PINOT_SERVER_ADMIN_PORT" >"$PORTS_FILE"
}

java_common() {
    echo "-Djava.awt.headless=true -Djava.io.tmpdir=$STATE/tmp -Dpinot.logs.dir=$LOGS" \
        "-Dlog4j2.configurationFile=$LOG4J"
}

start_zk() {
    log "starting ZooKeeper on $HOST:$PINOT_ZK_PORT"
    # setsid + nohup: own session, immune to the caller's SIGHUP/SIGINT, so it outlives `make`.
    # A small, mostly idle JVM: serial GC and C1 only keep its footprint and startup CPU low.
    # shellcheck disable=SC2086,SC2046
    setsid nohup "$JAVA" $PINOT_ZK_HEAP_OPTS -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        $(java_common) -Dpinot.log.name=zookeeper \
        -Dzookeeper.admin.enableServer=false \
        -cp "$LIB_DIR/*" org.apache.zookeeper.server.ZooKeeperServerMain "$ZK_CFG" \
        >>"$LOGS/zookeeper.out" 2>&1 </dev/null 9>&- &
    echo $! >"$ZK_PIDFILE"
}

start_pinot() {
    log "starting Pinot controller :$PINOT_CONTROLLER_PORT, broker :$PINOT_BROKER_PORT," \
        "server :$PINOT_SERVER_PORT/:$PINOT_SERVER_ADMIN_PORT (logs $LOGS)"
    # shellcheck disable=SC2086,SC2046
    setsid nohup "$JAVA" $PINOT_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=50 $(java_common) \
        "${JDK17_OPTS[@]}" $PINOT_JIT_OPTS $PINOT_JAVA_OPTS \
        -Dpinot.log.name=pinot -Dpinot.admin.system.exit=true \
        -cp "$LIB_DIR/*" org.apache.pinot.tools.admin.PinotAdministrator StartServiceManager \
        -clusterName "$CLUSTER" -zkAddress "$HOST:$PINOT_ZK_PORT" -port -1 \
        -bootstrapConfigPaths "$CONTROLLER_CONF" "$BROKER_CONF" "$SERVER_CONF" \
        >>"$LOGS/pinot.out" 2>&1 </dev/null 9>&- &
    echo $! >"$PINOT_PIDFILE"
}

# Ports this cluster binds; each must be free unless our own process already holds it.
check_ports_free() {
    local name port
    for name in "$@"; do
        case "$name" in
        zk) port=$PINOT_ZK_PORT ;;
        controller) port=$PINOT_CONTROLLER_PORT ;;
        broker) port=$PINOT_BROKER_PORT ;;
        server) port=$PINOT_SERVER_PORT ;;
        server_admin) port=$PINOT_SERVER_ADMIN_PORT ;;
        esac
        if port_open "$port"; then
            die "port $port ($name) is in use by another process (not this cluster in $STATE);" \
                "set PINOT_$(echo "$name" | tr '[:lower:]' '[:upper:]')_PORT"
        fi
    done
}

# Liveness by pid only: right after the fork the child may not have exec'ed java yet, so its
# command line does not show the marker pid_of looks for.
wait_ready() {
    local start=$SECONDS deadline=$((SECONDS + PINOT_READY_TIMEOUT))
    local zpid ppid
    zpid="$(<"$ZK_PIDFILE")"
    ppid="$(<"$PINOT_PIDFILE")"
    local zk=0 controller=0 broker=0 server=0
    while ((SECONDS < deadline)); do
        if ! alive "$zpid"; then
            log "ZooKeeper (pid $zpid) exited during startup; its log output:" >&2
            show_new_logs zookeeper.out zookeeper.log pinot.out pinot.log
            exit 1
        fi
        if ! alive "$ppid"; then
            log "Pinot (pid $ppid) exited during startup; its log output:" >&2
            show_new_logs zookeeper.out zookeeper.log pinot.out pinot.log
            exit 1
        fi
        ((zk)) || { zk_ok && zk=1 && log "ZooKeeper ready ($((SECONDS - start)) s)"; } || true
        ((controller)) || { controller_ok && controller=1 &&
            log "controller ready ($((SECONDS - start)) s)"; } || true
        ((broker)) || { broker_ok && broker=1 && log "broker ready ($((SECONDS - start)) s)"; } ||
            true
        ((server)) || { server_ok && server=1 && log "server ready ($((SECONDS - start)) s)"; } ||
            true
        if ((zk && controller && broker && server)); then
            log "ready: controller http://$HOST:$PINOT_CONTROLLER_PORT," \
                "broker http://$HOST:$PINOT_BROKER_PORT (pid $ppid, $((SECONDS - start)) s)"
            return 0
        fi
        sleep 0.5
    done
    log "not ready after ${PINOT_READY_TIMEOUT}s (zk=$zk controller=$controller broker=$broker" \
        "server=$server); processes left running for inspection (scripts/pinot.sh down stops" \
        "them); log tail:" >&2
    show_new_logs zookeeper.out zookeeper.log pinot.out pinot.log
    exit 1
}

cmd_up() {
    require_jars
    mkdir -p "$STATE"
    # Serialise concurrent `up`/`down` for the same cluster. fd 9 is closed for the JVMs below so
    # they do not hold the lock after this script exits.
    exec 9>"$STATE/.lock"
    flock 9

    local zpid ppid
    zpid="$(zk_pid)" || zpid=""
    ppid="$(pinot_pid)" || ppid=""
    if [[ -n "$zpid" && -n "$ppid" ]] && all_ok; then
        log "already running (controller http://$HOST:$PINOT_CONTROLLER_PORT, pid $ppid)"
        return 0
    fi
    [[ -n "$zpid" ]] || rm -f "$ZK_PIDFILE"
    [[ -n "$ppid" ]] || rm -f "$PINOT_PIDFILE"

    if [[ -z "$zpid" ]]; then
        check_ports_free zk
    fi
    if [[ -z "$ppid" ]]; then
        check_ports_free controller broker server server_admin
    fi

    write_config
    mark_logs pinot.log pinot.out zookeeper.log zookeeper.out
    [[ -n "$zpid" ]] || start_zk
    if [[ -z "$ppid" ]]; then
        # Helix needs ZooKeeper before the controller starts; wait briefly for it here.
        local deadline=$((SECONDS + 30))
        local zpid_now
        zpid_now="$(<"$ZK_PIDFILE")"
        until zk_ok; do
            if ! alive "$zpid_now"; then
                log "ZooKeeper exited during startup; its log output:" >&2
                show_new_logs zookeeper.out zookeeper.log pinot.out pinot.log
                exit 1
            fi
            ((SECONDS < deadline)) || die "ZooKeeper not answering on $HOST:$PINOT_ZK_PORT"
            sleep 0.2
        done
        start_pinot
    else
        log "Pinot pid $ppid is starting; waiting for it"
    fi
    wait_ready
}

cmd_down() {
    [[ -d "$STATE" ]] || {
        log "not running"
        return 0
    }
    exec 9>"$STATE/.lock"
    flock 9
    local pid stopped=0
    # Pinot first: it deregisters from Helix while ZooKeeper is still there.
    if pid="$(pinot_pid)"; then
        stop_pid Pinot "$pid"
        stopped=1
    fi
    if pid="$(zk_pid)"; then
        stop_pid ZooKeeper "$pid"
        stopped=1
    fi
    rm -f "$PINOT_PIDFILE" "$ZK_PIDFILE"
    if ((stopped)); then log "stopped"; else log "not running"; fi
}

cmd_status() {
    local zpid ppid
    zpid="$(zk_pid)" || zpid=""
    ppid="$(pinot_pid)" || ppid=""
    if [[ -z "$zpid" && -z "$ppid" ]]; then
        log "not running"
        return 1
    fi
    local z=down c=down b=down s=down
    zk_ok && z=ok
    controller_ok && c=ok
    broker_ok && b=ok
    server_ok && s=ok
    log "zookeeper pid ${zpid:-none} :$PINOT_ZK_PORT $z; pinot pid ${ppid:-none}:" \
        "controller :$PINOT_CONTROLLER_PORT $c, broker :$PINOT_BROKER_PORT $b," \
        "server :$PINOT_SERVER_ADMIN_PORT $s"
    [[ -n "$zpid" && -n "$ppid" && $z == ok && $c == ok && $b == ok && $s == ok ]]
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
