# hypercode container image.
#
#   docker build -t hypercode .
#   docker run --rm -e DATABASE_URL=... -e HYPERCODE_REDIS_URL=... hypercode migrate
#
# The database migrations are embedded in the binary (sqlx::migrate!), so the
# runtime image contains nothing but the binary and CA certificates.

FROM rust:1-bookworm AS builder
WORKDIR /src
# sqlx checks queries against the committed offline data in .sqlx/, not a live DB.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hypercode \
    && install -m 0755 target/release/hypercode /usr/local/bin/hypercode

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hypercode \
    && useradd --system --uid 10001 --gid hypercode --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin hypercode
COPY --from=builder /usr/local/bin/hypercode /usr/local/bin/hypercode
USER 10001:10001
ENV HYPERCODE_LISTEN=0.0.0.0:8000
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["hypercode"]
CMD ["serve"]
