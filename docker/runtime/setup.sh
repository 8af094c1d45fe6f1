#!/bin/sh
# The runtime image's layer under the binary, on a Debian base: CA certificates and the
# unprivileged user (uid/gid 10001) the binary runs as, nothing else. The Dockerfile's runtime
# stage runs it, in the multi-stage build and in scripts/images alike.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates
apt-get clean
rm -rf /var/lib/apt/lists/*
groupadd --system --gid 10001 hypercode
useradd --system --uid 10001 --gid hypercode --home-dir /nonexistent \
    --no-create-home --shell /usr/sbin/nologin hypercode
