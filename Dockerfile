# syntax=docker/dockerfile:1.7
#
# writ's container images, all from one build: every binary is compiled once
# in the `build` stage, and each deployable gets its own small target with the
# right entrypoint, port and HEALTHCHECK:
#
#   docker build --target worker  -t writ-worker  .   # writ-worker  (:9464 metrics/probes)
#   docker build --target ingress -t writ-ingress .   # writ-ingress (:8080)
#   docker build --target edge    -t writ-edge    .   # writ-edge    (:8090)
#   docker build                  -t writ         .   # the `writ` CLI (default, last stage)
#
# Every image holds every binary (they share the `runtime` layers, so this
# costs nothing extra), which lets one-shots such as `writ topics init` run from
# any of them. Images run as uid/gid 10001, never root.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# librdkafka is compiled from source by rdkafka-sys (OpenSSL + zlib linked dynamically).
# Package versions are not pinned (DL3008): Debian replaces them with security
# updates, so pins would break rebuilds; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The binaries this image ships. The build copies each one by name, so a
# renamed or missing binary fails here instead of producing an image without
# it; crates/writ-cli/tests/deploy.rs checks this list against the workspace.
ARG WRIT_BINARIES="writ writ-worker writ-ingress writ-edge"
COPY . .
# The cargo registry and target/ live in BuildKit cache mounts: a source-only
# change recompiles writ's crates, not the ~400 dependencies. target/ is a
# cache, not a layer, so the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && for bin in ${WRIT_BINARIES}; do cp "target/release/${bin}" /out/; done

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to Kafka, the registry and HTTP masters; libssl3: librdkafka's
# SSL; curl: the HEALTHCHECKs below (the probes are plain HTTP GETs). Unpinned
# for the reason given above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 writ \
    && useradd --system --uid 10001 --gid writ --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin writ \
    && mkdir -p /etc/writ /var/lib/writ /var/lib/writ-ingress /var/lib/writ-edge \
    && chown writ:writ /var/lib/writ /var/lib/writ-ingress /var/lib/writ-edge
COPY --from=build /out/ /usr/local/bin/
COPY schemas /etc/writ/schemas
# Writable state, owned by the service user so a fresh named volume inherits
# that: the ingress' status view (/var/lib/writ-ingress), the edge's local
# store and outbox (/var/lib/writ-edge); relative paths land in /var/lib/writ.
WORKDIR /var/lib/writ
# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001

# ---------------------------------------------------------------- worker
FROM runtime AS worker
EXPOSE 9464
# Ready = subscribed to its topic and able to apply; the worker needs no more
# than its drain_timeout_ms (10 s by default) to stop on SIGTERM.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9464/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["writ-worker"]
CMD ["--config", "/etc/writ/worker.toml"]

# ---------------------------------------------------------------- ingress
FROM runtime AS ingress
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["writ-ingress"]
CMD ["--config", "/etc/writ/ingress.toml"]

# ---------------------------------------------------------------- edge
FROM runtime AS edge
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8090/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["writ-edge"]
CMD ["--config", "/etc/writ/edge.toml"]

# ---------------------------------------------------------------- writ (CLI, default)
FROM runtime AS writ
# A one-shot tool: nothing to probe.
HEALTHCHECK NONE
ENTRYPOINT ["writ"]
CMD ["--help"]
