# hypercode container image.
#
#   docker build -t hypercode .
#   docker run --rm -e DATABASE_URL=... -e HYPERCODE_REDIS_URL=... hypercode migrate
#
# The database migrations are embedded in the binary (sqlx::migrate!), so the
# runtime image contains nothing but the binary, CA certificates and the shipped
# catalogue (on Debian's slim base), run as uid 10001. Needs BuildKit (the cache mounts). Without it, or
# without a registry, scripts/images builds this file's runtime stage, taken from here word for
# word, on a local Debian base with a binary built on the host (`scripts/images
# --runtime-dockerfile`); so the runtime stage's first line must stay as it is.

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
# CA certificates and the unprivileged user.
COPY docker/runtime/setup.sh /tmp/setup.sh
RUN sh /tmp/setup.sh && rm /tmp/setup.sh
COPY --from=builder /usr/local/bin/hypercode /usr/local/bin/hypercode
# The shipped catalogue; mount another and point HYPERCODE_CATALOG at it to sell other things.
COPY catalog.toml /etc/hypercode/catalog.toml
USER 10001:10001
ENV HYPERCODE_LISTEN=0.0.0.0:8000 HYPERCODE_CATALOG=/etc/hypercode/catalog.toml
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s CMD ["hypercode", "healthcheck"]
ENTRYPOINT ["hypercode"]
CMD ["serve"]
