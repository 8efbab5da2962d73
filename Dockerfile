# syntax=docker/dockerfile:1
#
# One image for every role of the order service:
#   order-api (default entrypoint; `order-api migrate` applies migrations and exits),
#   order-worker, order-compensator and the order-loadgen tool.
#
#   docker build -t order-service:latest .
#   docker run --rm order-service:latest --help
#   docker run --rm --entrypoint order-worker order-service:latest --help
#
# The runtime stage is runtime-base (user, config, ports, entrypoint) plus
# the binaries compiled in the builder stage. `--target runtime-base` is that
# stage without the binaries: scripts/container-smoke.sh adds binaries built
# on a Debian bookworm host to it, so it tests the same runtime stage without
# the builder's minutes.
#
# Configuration comes from /app/config/config.yaml (the local defaults) and the
# ORDER__SECTION__KEY environment variables (see README.md); secrets belong in
# the environment.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build ---
FROM ${RUST_IMAGE} AS builder

# rdkafka builds its bundled librdkafka with make/gcc (zlib is bundled too);
# no OpenSSL: the workspace uses no TLS feature.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependency layer: the manifests of every member with stub sources, so the
#    (slow) dependency build is cached until Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY order-core/Cargo.toml order-core/Cargo.toml
COPY order-runtime/Cargo.toml order-runtime/Cargo.toml
COPY order-testkit/Cargo.toml order-testkit/Cargo.toml
COPY order-api/Cargo.toml order-api/Cargo.toml
COPY order-worker/Cargo.toml order-worker/Cargo.toml
COPY order-compensator/Cargo.toml order-compensator/Cargo.toml
COPY order-loadgen/Cargo.toml order-loadgen/Cargo.toml
RUN set -eux; \
    for member in order-core order-runtime order-testkit order-api order-worker order-compensator order-loadgen; do \
        mkdir -p "${member}/src"; \
        echo '// dependency-layer stub' > "${member}/src/lib.rs"; \
    done; \
    for bin in order-api order-worker order-compensator order-loadgen; do \
        echo 'fn main() {}' > "${bin}/src/main.rs"; \
    done; \
    cargo build --release --locked --workspace --bins; \
    rm -rf order-*/src \
        target/release/order-* \
        target/release/deps/order_* target/release/deps/liborder_* \
        target/release/.fingerprint/order-*

# 2. The real sources. Migrations are embedded at compile time (sqlx migrate!),
#    order-api/openapi.json through include_str!.
COPY migrations migrations
COPY order-core/src order-core/src
COPY order-runtime/src order-runtime/src
COPY order-testkit/src order-testkit/src
COPY order-api/src order-api/src
COPY order-api/openapi.json order-api/openapi.json
COPY order-api/assets order-api/assets
COPY order-worker/src order-worker/src
COPY order-compensator/src order-compensator/src
COPY order-loadgen/src order-loadgen/src
RUN set -eux; \
    cargo build --release --locked --workspace --bins; \
    mkdir -p /out; \
    for bin in order-api order-worker order-compensator order-loadgen; do \
        cp "target/release/${bin}" /out/; \
    done; \
    /out/order-api --version

# --------------------------------------------------------- runtime base ---
FROM ${RUNTIME_IMAGE} AS runtime-base

# ca-certificates for outbound TLS should it ever be enabled; curl only for
# the container health checks (docker-compose.yml) of /health/ready.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 order \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin order

COPY --chown=root:root --chmod=0644 config/config.yaml /app/config/config.yaml

WORKDIR /app
USER 10001:10001

# config/config.yaml listens on loopback, for a developer's machine; in a
# container the probes and clients come from outside, so every interface.
ENV ORDER__SERVER__HOST=0.0.0.0 \
    ORDER__OBSERVABILITY__HOST=0.0.0.0

# order-api (server.port), order-worker and order-compensator (observability.port).
EXPOSE 8082 8084 8085

# Every binary stops gracefully on SIGTERM and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["order-api"]

# -------------------------------------------------------------- runtime ---
# The default target: the runtime base with the binaries compiled above.
FROM runtime-base AS runtime
COPY --from=builder /out/order-api /out/order-worker /out/order-compensator /out/order-loadgen /usr/local/bin/
