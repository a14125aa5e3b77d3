# A private dockerd (docker.io's, from Debian) for peer checks and benches:
# its own data root, exec root, socket and containerd namespaces under one
# directory, no bridge and no iptables rules, so it touches nothing of the
# host's docker (if any) and several can run at once.  Needs root.  Sourced:
#
#   . tools/private-dockerd.sh
#   private_dockerd_start /tmp/orca-dockerd.XXXX [extra dockerd flags...]
#   "${PRIVATE_DOCKER[@]}" load -i image.tar     # /usr/bin/docker -H unix://DIR/docker.sock
#   private_dockerd_stop                         # by its pid; waits for it to exit
#
# Keep DIR short: containerd's socket lives under it (unix socket paths are
# limited to 108 bytes).

PRIVATE_DOCKERD_PID=
PRIVATE_DOCKERD_DIR=
PRIVATE_DOCKER=()

private_dockerd_start() {
    local dir=$1
    shift
    mkdir -p "$dir/data" "$dir/exec"
    local ns="orca-peer-${dir##*/}"
    /usr/sbin/dockerd --data-root "$dir/data" --exec-root "$dir/exec" -H "unix://$dir/docker.sock" \
        --pidfile "$dir/dockerd.pid" --containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
        --bridge=none --iptables=false --ip6tables=false --ip-masq=false "$@" >"$dir/dockerd.log" 2>&1 &
    PRIVATE_DOCKERD_PID=$!
    PRIVATE_DOCKERD_DIR=$dir
    PRIVATE_DOCKER=(/usr/bin/docker -H "unix://$dir/docker.sock")
    local i
    for i in $(seq 300); do  # up to 60 s
        if "${PRIVATE_DOCKER[@]}" version >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$PRIVATE_DOCKERD_PID" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    echo "private dockerd did not start; its log ends:" >&2
    tail -n 20 "$dir/dockerd.log" >&2
    private_dockerd_stop
    return 1
}

private_dockerd_stop() {
    [ -n "$PRIVATE_DOCKERD_PID" ] || return 0
    kill "$PRIVATE_DOCKERD_PID" 2>/dev/null || true
    local i
    for i in $(seq 150); do  # up to 30 s for its containers and containerd to stop
        kill -0 "$PRIVATE_DOCKERD_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$PRIVATE_DOCKERD_PID" 2>/dev/null || true
    wait "$PRIVATE_DOCKERD_PID" 2>/dev/null || true
    PRIVATE_DOCKERD_PID=
}
