# One image with every writ binary; each container runs one of them.
# Build:  docker build -t writ .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out && find target/release -maxdepth 1 -type f -executable -name 'writ*' -exec cp {} /out/ \;

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin writ
COPY --from=build /out/ /usr/local/bin/
COPY schemas /etc/writ/schemas
USER writ
ENTRYPOINT ["writ"]
CMD ["--help"]
