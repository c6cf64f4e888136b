# Process helpers shared by scripts/kafka.sh and scripts/pinot.sh (sourced, not run).
# The caller defines HOST, STATE and LOGS, and a log() function.

# A zombie (exited, not yet reaped by whoever inherited it) counts as gone.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
    [[ -n "$state" && "$state" != Z ]]
}

# Pid from a pid file if that process is alive and its command line contains the marker (guards
# against pid reuse and against touching any other JVM).
pid_of() {
    local pidfile="$1" marker="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
    echo "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# Remember where this start's output begins in each log, so failures show this attempt, not
# earlier runs: mark_logs FILE...
mark_logs() {
    local f
    for f in "$@"; do
        stat -c %s "$LOGS/$f" 2>/dev/null >"$STATE/.$f.offset" || echo 0 >"$STATE/.$f.offset"
    done
}

# The tail of what each log gained since mark_logs, Java stack frames left out: show_new_logs FILE...
show_new_logs() {
    local f offset size
    for f in "$@"; do
        [[ -s "$LOGS/$f" ]] || continue
        offset="$(cat "$STATE/.$f.offset" 2>/dev/null || echo 0)"
        size="$(stat -c %s "$LOGS/$f")"
        ((size >= offset)) || offset=0 # rolled over meanwhile
        ((size > offset)) || continue
        echo "==> $LOGS/$f <==" >&2
        tail -c +"$((offset + 1))" "$LOGS/$f" | grep -vE '^\s+at ' | tail -n 40 >&2
    done
}

# SIGTERM, wait up to 30 s, then SIGKILL: stop_pid NAME PID
stop_pid() {
    local name="$1" pid="$2"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if alive "$pid"; then
        log "$name still running after 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.1; done
    fi
}
