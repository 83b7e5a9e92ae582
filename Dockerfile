# Multi-stage build: cargo-chef caches the dependency build in its own layer, so a code
# change rebuilds only the workspace's crates.
FROM rust:1-slim-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin stitcher --bin engagement-sim
# The store's directory, owned by the user the service runs as (distroless has no shell).
RUN mkdir -p /data

# Distroless carries CA certificates and runs as a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /app/target/release/stitcher /usr/local/bin/stitcher
COPY --from=builder /app/target/release/engagement-sim /usr/local/bin/engagement-sim
COPY config /etc/stitcher
COPY --from=builder --chown=nonroot:nonroot /data /data
# Answers are parsed and kept on many blocking threads; glibc's default of an arena per
# thread keeps what each freed, a third more peak memory with the store (BENCHMARKS.md).
ENV STITCHER__SERVER__LISTEN=0.0.0.0:8080 STITCHER__STORE__PATH=/data MALLOC_ARENA_MAX=2
VOLUME /data
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stitcher"]
