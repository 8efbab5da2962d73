# shellcheck shell=bash
# shellcheck disable=SC2154 # set by container-smoke.sh or a file sourced before this one
# container-smoke.sh, steps 4-8: what k8s/ asks (scripts/k8s_spec.py's spec of
# each manifest's container, the image's user, the probed ports free), running
# a role as its manifest asks and checking it (probes from its own process,
# uid/gid, read-only root, SIGTERM and exit 0), one-shot containers, the
# traffic check, and the run as the Kubernetes manifests run the image.
# Sourced by scripts/container-smoke.sh after podman.sh, whose variables it
# uses; compose.sh uses its functions and the running array.

# ------------------------------------------------------- what k8s/ asks ---
spec_dir="${state}/spec-$$"
rm -rf "$spec_dir"
mkdir -p "$spec_dir"
for workload in job-migrate deployment-api deployment-worker deployment-compensator; do
    python3 "${script_dir}/k8s_spec.py" "k8s/${workload}.yaml" >"${spec_dir}/${workload}.json" ||
        fail "k8s/${workload}.yaml: no container spec"
done

image_user=$(podman image inspect -f '{{.Config.User}}' "$image")
for workload in job-migrate deployment-api deployment-worker deployment-compensator; do
    want=$(jq -r '"\(.user):\(.group)"' "${spec_dir}/${workload}.json")
    [[ "$image_user" == "$want" ]] ||
        fail "the image runs as '${image_user}', k8s/${workload}.yaml as runAsUser:runAsGroup ${want}"
done
say "the image's user ${image_user} is the manifests' runAsUser:runAsGroup"

# The pids listening on a TCP port.
listeners() {
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}
# Every port the manifests probe must be free: the roles listen on them, on
# the host network.
ports_free() {
    local workload port holder
    for workload in deployment-api deployment-worker deployment-compensator; do
        for port in $(jq -r '[.probes[].port, (.scrape // {}).port] | map(select(. != null)) | unique | .[]' \
            "${spec_dir}/${workload}.json"); do
            if [[ -n "$(ss -Hltn "sport = :${port}" 2>/dev/null)" ]]; then
                holder=$(ss -Hltnp "sport = :${port}" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 |
                    sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1 (pid \2)/' || true)
                fail "port ${port}, which k8s/${workload}.yaml probes, is taken${holder:+ by ${holder}}"
            fi
        done
    done
}
ports_free

# ------------------------------------------------------- running a role ---
# The settings that point a manifest's container at this machine's services,
# under names of this run's own.
connection_env() {
    local tag=$1
    local db="ordertest_${id}_${tag}"
    printf '%s\n' \
        "ORDER__DATABASE__URL=postgres://postgres@127.0.0.1:5432/${db}" \
        "ORDER__REDIS__HOST=127.0.0.1" \
        "ORDER__REDIS__PORT=6379" \
        "ORDER__REDIS__KEY_PREFIX=ordertest:${id}_${tag}:" \
        "ORDER__RABBITMQ__HOST=127.0.0.1" \
        "ORDER__RABBITMQ__PORT=5672" \
        "ORDER__RABBITMQ__USERNAME=guest" \
        "ORDER__RABBITMQ__PASSWORD=guest" \
        "ORDER__RABBITMQ__EXCHANGE=ordertest.${id}_${tag}.seckill" \
        "ORDER__RABBITMQ__QUEUE=ordertest.${id}_${tag}.orders" \
        "ORDER__RABBITMQ__DEAD_LETTER_EXCHANGE=ordertest.${id}_${tag}.dlx" \
        "ORDER__RABBITMQ__DEAD_LETTER_QUEUE=ordertest.${id}_${tag}.dlq" \
        "ORDER__KAFKA__BROKERS=${kafka_brokers:-127.0.0.1:9092}" \
        "ORDER__KAFKA__TOPIC=ordertest-${id}_${tag}" \
        "ORDER__KAFKA__GROUP_ID=ordertest-${id}_${tag}" \
        "ORDER__KAFKA__DEAD_LETTER_TOPIC=ordertest-${id}_${tag}.dlq" \
        "ORDER__API__ADMIN_TOKEN=operator-${id}" \
        "ORDER__API__AUTH__JWT_SECRET=container-smoke-secret-${id}-0123456789abcdef"
}
# Registers a run's database, broker names and key prefix for removal, and
# creates its database.
throwaway() {
    local tag=$1
    databases+=("ordertest_${id}_${tag}")
    rmq_names+=("ordertest.${id}_${tag}.seckill" "ordertest.${id}_${tag}.orders"
        "ordertest.${id}_${tag}.dlx" "ordertest.${id}_${tag}.dlq")
    redis_prefixes+=("ordertest:${id}_${tag}:")
    psql -w -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"ordertest_${id}_${tag}\"" >/dev/null
}

# podman run options for a manifest's container: its hardening, limits, env
# (the connection settings of run TAG win), host network.
run_options() {
    local spec=$1 tag=$2
    local -n out=$3
    out=(--network host --pull=never --stop-signal SIGTERM)
    out+=(--user "$(jq -r '"\(.user):\(.group)"' "$spec")")
    if [[ "$(jq -r .read_only_root "$spec")" == true ]]; then
        # Only the manifest's emptyDir mounts are writable: no tmpfs of podman's own.
        out+=(--read-only --read-only-tmpfs=false)
    fi
    local path size
    while IFS=$'\t' read -r path size; do
        out+=(--tmpfs "${path}:rw,size=${size}m,mode=1777")
    done < <(jq -r '.tmpfs[] | [.path, (.size_mib // 64)] | @tsv' "$spec")
    local cap group
    for cap in $(jq -r '.cap_drop[]' "$spec"); do out+=(--cap-drop "$cap"); done
    for group in $(jq -r '.extra_groups[]' "$spec"); do out+=(--group-add "$group"); done
    if [[ "$(jq -r .no_new_privileges "$spec")" == true ]]; then
        out+=(--security-opt no-new-privileges)
    fi
    local memory cpus
    memory=$(jq -r '.memory_mib // empty' "$spec")
    cpus=$(jq -r '.cpus // empty' "$spec")
    [[ -z "$memory" ]] || out+=(--memory "${memory}m" --memory-swap "${memory}m")
    [[ -z "$cpus" ]] || out+=(--cpus "$cpus")
    local line
    while IFS= read -r line; do out+=(--env "$line"); done < <(jq -r '.env | to_entries[] | "\(.key)=\(.value)"' "$spec")
    while IFS= read -r line; do out+=(--env "$line"); done < <(connection_env "$tag")
}

# Prints a container's last log lines (on failure).
show_logs() {
    say "last lines of $1:" >&2
    podman logs --tail "${2:-30}" "$1" 2>&1 | sed 's/^/    /' >&2 || true
}

# start_role WORKLOAD TAG NAME: runs the manifest's container detached.
start_role() {
    local workload=$1 tag=$2 name=$3 spec="${spec_dir}/$1.json" opts=() args=() err
    run_options "$spec" "$tag" opts
    mapfile -t args < <(jq -r '.args[]' "$spec")
    if ! err=$(podman run -d --name "$name" "${opts[@]}" \
        --entrypoint "$(jq -c .command "$spec")" "$image" "${args[@]}" 2>&1 >/dev/null); then
        fail "podman run ${workload} failed: $(tail -1 <<<"$err")"
    fi
}

# http_status URL [TOKEN [SECONDS]]: the status code (000 when nothing
# answers within SECONDS, 3 by default).
http_status() {
    local url=$1 token=${2:-} seconds=${3:-3}
    curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 1 --max-time "$seconds" \
        ${token:+-H "Authorization: Bearer ${token}"} "$url" 2>/dev/null || true
}

# wait_ready NAME PORT: the readiness path answers 200 within 60 s, and the
# container is still running.
wait_ready() {
    local name=$1 url=$2 status=
    for _ in $(seq 1 120); do
        status=$(http_status "$url")
        [[ "$status" == 200 ]] && return 0
        if [[ "$(podman inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]]; then
            show_logs "$name"
            fail "${name} exited with $(podman inspect -f '{{.State.ExitCode}}' "$name") before it was ready"
        fi
        sleep 0.5
    done
    show_logs "$name"
    fail "${name}: ${url} answered ${status:-nothing} for 60 s"
}

# root_read_only NAME: a write to / fails inside the container with EROFS,
# even by root (who owns /, so nothing but a read-only root refuses it).
root_read_only() {
    local name=$1 out
    if out=$(podman exec --user 0 "$name" sh -c ': > /.write-probe' 2>&1); then
        fail "${name}: the root filesystem accepted a write"
    fi
    grep -q "Read-only file system" <<<"$out" ||
        fail "${name}: a write to / failed, but not for a read-only root: ${out}"
}

# check_role WORKLOAD NAME: every probe and scrape path answers 200 within
# the probe's timeout, from the container's own process, which runs as the
# manifest's user; and / refuses writes when the manifest says so.
check_role() {
    local workload=$1 name=$2 spec="${spec_dir}/$1.json" kind path port seconds status pid uids gids want note=
    pid=$(podman inspect -f '{{.State.Pid}}' "$name")
    while IFS=$'\t' read -r kind path port seconds; do
        status=$(http_status "http://127.0.0.1:${port}${path}" "" "$seconds")
        [[ "$status" == 200 ]] || { show_logs "$name"; fail "${name}: ${kind} ${path} on ${port} answered ${status}"; }
        listeners "$port" | grep -qx "$pid" ||
            fail "${name}: port ${port} is served by pid $(listeners "$port" | xargs), not by the container's ${pid}"
    done < <(jq -r '(.probes[] | [.kind, .path, .port, .timeout]),
        (.scrape // empty | ["scrape", .path, .port, 3]) | @tsv' "$spec")
    uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/${pid}/status")
    gids=$(awk '/^Gid:/ {print $2, $3, $4, $5}' "/proc/${pid}/status")
    want=$(jq -r .user "$spec")
    [[ "$uids" == "$want $want $want $want" ]] || fail "${name}: the process runs with uids ${uids}, not ${want}"
    want=$(jq -r .group "$spec")
    [[ "$gids" == "$want $want $want $want" ]] || fail "${name}: the process runs with gids ${gids}, not ${want}"
    if [[ "$(jq -r .read_only_root "$spec")" == true ]]; then
        root_read_only "$name"
        note="; / read-only"
    fi
    say "${name}: $(jq -r '[.probes[].path] + [(.scrape // {}).path // empty] | unique | join(", ")' "$spec") answer 200 from its process on $(jq -r '.probes[0].port' "$spec"); uid/gid $(jq -r '"\(.user)/\(.group)"' "$spec")${note}"
}

# stop_role NAME GRACE: SIGTERM, and exit 0 within the grace period.
stop_role() {
    local name=$1 grace=$2 code t0=$SECONDS out
    # (podman reports the health-check timers it cannot remove without systemd.)
    out=$(podman stop -t "$grace" "$name" 2>&1) || { printf '%s\n' "$out" >&2; fail "podman stop ${name} failed"; }
    code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
    if [[ "$code" != 0 ]]; then
        show_logs "$name"
        fail "${name} exited with ${code} on SIGTERM"
    fi
    if podman logs "$name" 2>&1 | grep -q panicked; then
        show_logs "$name"
        fail "${name} panicked"
    fi
    # A role that crashed and was restarted (Compose's restart policy) hides nothing.
    code=$(podman inspect -f '{{.RestartCount}}' "$name")
    [[ "$code" == 0 ]] || { show_logs "$name"; fail "${name} was restarted ${code} times"; }
    say "${name}: SIGTERM, exit 0 in $((SECONDS - t0)) s"
}

# one_shot SPEC TAG ENTRYPOINT ARGS...: runs a manifest-hardened container to
# completion; its stdout is printed, its stderr kept for a failure.
one_shot() {
    local spec=$1 tag=$2 entry=$3 opts=() err name
    shift 3
    run_options "$spec" "$tag" opts
    # (Often run in a command substitution: cleanup finds it by its name.)
    name="${project}-once-${RANDOM}${RANDOM}"
    err=$(mktemp)
    if ! timeout 180 podman run --rm --name "$name" "${opts[@]}" --entrypoint "[\"${entry}\"]" "$image" "$@" 2>"$err"; then
        sed 's/^/    /' "$err" >&2
        rm -f "$err"
        fail "${entry} $* failed in a container"
    fi
    rm -f "$err"
}

# poll TOKEN URL FILTER WANT: the JSON at URL (asked with TOKEN) through the
# jq FILTER, until it is WANT (60 s at most); prints the last value.
poll() {
    local token=$1 url=$2 filter=$3 want=$4 got=
    for _ in $(seq 1 120); do
        got=$(curl -fsS -H "Authorization: Bearer ${token}" "$url" | jq -r "$filter") || got=
        [[ "$got" == "$want" ]] && break
        sleep 0.5
    done
    printf '%s' "$got"
}

# traffic TAG API_PORT WORKER_SPEC API_SPEC BROKER: a burst from order-loadgen
# in the image through BROKER, then the orders, stats and failures through the API.
traffic() {
    local tag=$1 api=$2 worker_spec=$3 api_spec=$4 broker=$5 summary distinct poison token total order count failed status
    # A fixed seed: the same stream every run, with duplicates and poison in it.
    summary=$(one_shot "$worker_spec" "$tag" order-loadgen --broker "$broker" --count 80 --users 1 \
        --products 1000 --duplicate-ratio 0.2 --poison-ratio 0.05 --seed 15 --quiet)
    distinct=$(jq -r .distinct_pairs <<<"$summary")
    poison=$(jq -r .poison <<<"$summary")
    [[ "$distinct" =~ ^[0-9]+$ && "$poison" =~ ^[0-9]+$ ]] || fail "order-loadgen printed no summary: ${summary}"
    ((poison > 0 && distinct + poison < $(jq -r .sent <<<"$summary"))) ||
        fail "the burst lacks poison or duplicates, so it proves little: ${summary}"
    token=$(one_shot "$api_spec" "$tag" order-api token --user 1 --ttl 10m)
    total=$(poll "$token" "http://127.0.0.1:${api}/api/v1/users/1/orders?page=1&pageSize=100" .total "$distinct")
    [[ "$total" == "$distinct" ]] || fail "user 1 has ${total} orders through the API, the burst made ${distinct}"
    order=$(curl -fsS -H "Authorization: Bearer ${token}" \
        "http://127.0.0.1:${api}/api/v1/users/1/orders?page=1&pageSize=1" | jq -r '.items[0].order_id // .items[0].id')
    status=$(http_status "http://127.0.0.1:${api}/api/v1/orders/${order}" "$token")
    [[ "$status" == 200 ]] || fail "GET /api/v1/orders/${order} with its user's token answered ${status}"
    # Yesterday too: a run across midnight (UTC) still counts every order.
    count=$(curl -fsS -H "Authorization: Bearer operator-${id}" \
        "http://127.0.0.1:${api}/api/v1/stats/orders?from=$(date -u -d yesterday +%F)&to=$(date -u +%F)" |
        jq -r .order_count)
    [[ "$count" == "$distinct" ]] || fail "the operator's stats count ${count} orders, the burst made ${distinct}"
    failed=$(poll "operator-${id}" "http://127.0.0.1:${api}/api/v1/failures?status=failed" .total "$poison")
    [[ "$failed" == "$poison" ]] || fail "the API lists ${failed} failures, the burst had ${poison} poison messages"
    say "traffic: $(jq -r .sent <<<"$summary") messages from order-loadgen in the image through ${broker}; ${distinct} orders and ${poison} failures through the API"
}

# ------------------------------------------------- as k8s/ runs the image ---
say "as the Kubernetes manifests run it"
throwaway k8s
mapfile -t migrate_args < <(jq -r '.args[]' "${spec_dir}/job-migrate.json")
one_shot "${spec_dir}/job-migrate.json" k8s "$(jq -r '.command[0]' "${spec_dir}/job-migrate.json")" \
    "${migrate_args[@]}" >/dev/null
say "k8s/job-migrate.yaml: $(jq -r '.command + .args | join(" ")' "${spec_dir}/job-migrate.json") exited 0"
declare -A running
for workload in deployment-api deployment-worker deployment-compensator; do
    running[$workload]="${project}-${workload#*-}"
    start_role "$workload" k8s "${running[$workload]}"
done
for workload in deployment-api deployment-worker deployment-compensator; do
    port=$(jq -r '[.probes[] | select(.kind == "readinessProbe")][0].port' "${spec_dir}/${workload}.json")
    path=$(jq -r '[.probes[] | select(.kind == "readinessProbe")][0].path' "${spec_dir}/${workload}.json")
    wait_ready "${running[$workload]}" "http://127.0.0.1:${port}${path}"
    check_role "$workload" "${running[$workload]}"
done
api_port=$(jq -r '.probes[0].port' "${spec_dir}/deployment-api.json")
traffic k8s "$api_port" "${spec_dir}/deployment-worker.json" "${spec_dir}/deployment-api.json" rabbitmq
# As the kubelet does: each preStop hook, then SIGTERM.
pre_stops=()
for workload in deployment-worker deployment-compensator deployment-api; do
    mapfile -t hook < <(jq -r '.pre_stop // [] | .[]' "${spec_dir}/${workload}.json")
    [[ ${#hook[@]} -gt 0 ]] || continue
    podman exec "${running[$workload]}" "${hook[@]}" &
    pre_stops+=("$!:${running[$workload]}:${hook[*]}")
done
for hook in "${pre_stops[@]}"; do
    wait "${hook%%:*}" || fail "${hook#*:}: the preStop hook failed"
    say "preStop ${hook#*:} exited 0"
done
for workload in deployment-worker deployment-compensator deployment-api; do
    stop_role "${running[$workload]}" "$(jq -r .grace_seconds "${spec_dir}/${workload}.json")"
done
