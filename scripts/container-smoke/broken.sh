# shellcheck shell=bash
# shellcheck disable=SC2154 # set by container-smoke.sh or a file sourced before this one
# container-smoke.sh: images broken on purpose, made from the one just tested,
# must fail the checks with the reason named (a plain run only: not with
# --full or --image). Each runs scripts/container-smoke.sh again with
# CONTAINER_SMOKE_NESTED=1, under this run's lock.
# Sourced by scripts/container-smoke.sh last.

# ------------------------------------------------ broken images must fail ---
# The checks above can fail: three images broken on purpose, each made from
# the one just tested, must fail them with the reason named.
# broken WHAT EXPECTED: builds the tested image plus the Containerfile lines
# on stdin, and requires a run on it to fail with a line matching EXPECTED.
broken() {
    local what=$1 expect=$2 ref="localhost/order-service:${id}-broken" out code=0
    { printf 'FROM %s\n' "$image"; cat; } >"${state}/Containerfile.broken"
    podman build --pull=never --network host -t "$ref" -f "${state}/Containerfile.broken" "$state" \
        >"${state}/broken.log" 2>&1 || { tail -5 "${state}/broken.log"; fail "building the broken image (${what}) failed"; }
    out=$(CONTAINER_SMOKE_NESTED=1 "${script_dir}/container-smoke.sh" --image "$ref" 2>&1) || code=$?
    podman rmi -f "$ref" >/dev/null 2>&1 || true
    rm -f "${state}/Containerfile.broken"
    if [[ $code -eq 0 ]] || ! grep -qE "$expect" <<<"$out"; then
        printf '%s\n' "$out" | tail -15 | sed 's/^/    /' >&2
        fail "an image with ${what} was not refused for it (exit ${code})"
    fi
    say "refused, as it must be: an image with ${what}: $(grep -E "$expect" <<<"$out" | head -1 | sed 's/^==> container-smoke: FAILED: //; s/^ *//')"
}
if [[ "$mode" == prebuilt ]]; then
    broken "a role's binary missing" "podman run deployment-worker failed" <<'LINES'
USER 0:0
RUN rm /usr/local/bin/order-worker
USER 10001:10001
LINES
    # Writable by the role's user but for the read-only root: only that refuses it.
    broken "a role that writes to its root filesystem" "cannot create /app/state/started: Read-only file system" <<'LINES'
USER 0:0
RUN mkdir /app/state && chown 10001:10001 /app/state \
 && mv /usr/local/bin/order-compensator /usr/local/bin/order-compensator.real \
 && printf '#!/bin/sh\nset -e\ndate > /app/state/started\nexec order-compensator.real "$@"\n' \
    > /usr/local/bin/order-compensator \
 && chmod 0755 /usr/local/bin/order-compensator
USER 10001:10001
LINES
    broken "root as its user" "the image runs as '0:0'" <<'LINES'
USER 0:0
LINES
fi
