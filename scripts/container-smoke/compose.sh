# shellcheck shell=bash
# shellcheck disable=SC2154 # set by container-smoke.sh or a file sourced before this one
# container-smoke.sh, step 9: the image as docker-compose.yml runs it, with
# podman-compose (PyPI, pinned, in .venv) and a host-network override: migrate,
# the three roles, the Compose health checks, traffic, stop.
# Sourced by scripts/container-smoke.sh after roles.sh, whose functions it
# uses; it defines compose, which podman.sh's cleanup calls.

# --------------------------------------------- as docker-compose.yml runs it ---
say "as docker-compose.yml runs it (podman-compose, host network)"
if ! .venv/bin/podman-compose --version 2>/dev/null | grep -q "$PODMAN_COMPOSE_VERSION"; then
    say "installing podman-compose ${PODMAN_COMPOSE_VERSION} into .venv"
    [[ -x .venv/bin/pip ]] || python3 -m venv .venv
    .venv/bin/pip install -q "podman-compose==${PODMAN_COMPOSE_VERSION}"
fi
# --read-only-tmpfs=false: read_only means what it means under Docker, with
# only the file's own tmpfs (/tmp) writable, not podman's /run and /var/tmp.
compose() {
    .venv/bin/podman-compose --project-name "$project" --podman-run-args=--read-only-tmpfs=false \
        -f docker-compose.yml -f "${state}/override-$$.json" "$@"
}
throwaway compose
# The Compose file consumes Kafka too: from the test suite's broker when one
# answers at TEST_KAFKA_BROKERS (scripts/kafka.sh), and the burst goes that
# way; else Kafka is turned off and the burst goes through RabbitMQ.
compose_broker=rabbitmq
kafka_enabled=false
if [[ -n "$kafka_brokers" ]]; then
    compose_broker=kafka
    kafka_enabled=true
    one_shot "${spec_dir}/deployment-worker.json" compose order-loadgen --broker kafka --count 0 --quiet >/dev/null
fi
# The app services on the host network, on this run's image and names; the
# backing services (postgres, redis, rabbitmq, kafka) are this machine's, so
# their images are never started (--no-deps).
overrides=$(connection_env compose | jq -R 'split("=") | {(.[0]): (.[1:] | join("="))}' |
    jq -s --arg kafka "$kafka_enabled" 'add + {"ORDER__KAFKA__ENABLED": $kafka}')
jq -n --arg image "$image" --argjson env "$overrides" '
    {services: (["migrate", "api", "worker", "compensator"]
        | map({key: ., value: {image: $image, network_mode: "host", environment: $env}})
        | from_entries)}' >"${state}/override-$$.json"

ports_free

compose_container() {
    podman ps -a --filter "label=io.podman.compose.project=${project}" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | head -1
}
compose up -d --no-build --no-deps migrate >"${state}/compose.log" 2>&1 ||
    { tail -20 "${state}/compose.log"; fail "podman-compose up migrate failed"; }
migrate=$(compose_container migrate)
[[ -n "$migrate" ]] || { tail -20 "${state}/compose.log"; fail "podman-compose made no migrate container"; }
code=$(podman wait "$migrate")
[[ "$code" == 0 ]] || { show_logs "$migrate"; fail "compose migrate exited with ${code}"; }
say "compose migrate exited 0"
compose up -d --no-build --no-deps api worker compensator >>"${state}/compose.log" 2>&1 ||
    { tail -20 "${state}/compose.log"; fail "podman-compose up api worker compensator failed"; }
declare -A compose_port=([api]=8082 [worker]=8084 [compensator]=8085)
for service in api worker compensator; do
    name=$(compose_container "$service")
    [[ -n "$name" ]] || fail "podman-compose made no ${service} container"
    # shellcheck disable=SC2004 # running is roles.sh's associative array
    running[compose-$service]=$name
    wait_ready "$name" "http://127.0.0.1:${compose_port[$service]}/health/ready"
    healthy=false
    for _ in $(seq 1 30); do
        if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=true && break; fi
        sleep 1
    done
    [[ "$healthy" == true ]] || { show_logs "$name"; fail "${name}: the Compose health check does not pass"; }
    hardening=$(podman inspect -f '{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}' "$name")
    [[ "$hardening" == "10001:10001 true "*"CAP_"*" "*"no-new-privileges"* ]] ||
        fail "${name}: Compose did not run it as 10001:10001, read-only, without capabilities and new privileges: ${hardening}"
    [[ "$(podman inspect -f '{{len .HostConfig.CapAdd}}' "$name")" == 0 ]] || fail "${name}: capabilities added"
    pid=$(podman inspect -f '{{.State.Pid}}' "$name")
    [[ "$(awk '/^CapEff:/ {print $2}' "/proc/${pid}/status")" == 0000000000000000 ]] ||
        fail "${name}: the process has capabilities"
    listeners "${compose_port[$service]}" | grep -qx "$pid" ||
        fail "${name}: port ${compose_port[$service]} is not served by the container's process"
    root_read_only "$name"
    say "${name}: ready from its own process, Compose health check passes, 10001:10001, no capabilities, / read-only"
done
traffic compose 8082 "${spec_dir}/deployment-worker.json" "${spec_dir}/deployment-api.json" "$compose_broker"
for service in worker compensator api; do
    stop_role "${running[compose-$service]}" 40
done
say "the image passed in $((SECONDS - started)) s"
