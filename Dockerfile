# omega-node and omega-certs from this repository, on Debian's slim image,
# run as an unprivileged user (uid 10001). The model is not in the image:
# mount all-MiniLM-L6-v2 (scripts/fetch-model.sh) and name it with
# OMEGA_MODEL_DIR or --model-dir.
#
#   docker build -t omega-node:local .
#
# deploy/compose/docker-compose.yml builds and runs it. Checked offline by
# scripts/check-deploy.sh (the binaries it copies are the packages' binaries,
# the runtime user is not root); no engine builds it in CI.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# .dockerignore leaves out target/, models/ and the fuzz and Cassandra trees.
COPY . .
RUN cargo build --release --locked -p omega-node -p omega-certs \
    && install -D -m 0755 target/release/omega-node target/release/omega-certs -t /out

FROM debian:${DEBIAN_RELEASE}-slim
RUN groupadd --system --gid 10001 omega \
    && useradd --system --uid 10001 --gid omega --no-create-home \
       --home-dir /var/lib/omega-node --shell /usr/sbin/nologin omega \
    && install -d -o omega -g omega -m 0700 /var/lib/omega-node
COPY --from=build /out/omega-node /out/omega-certs /usr/local/bin/
USER omega:omega
WORKDIR /var/lib/omega-node
# QUIC for TVs; the admin API (set OMEGA_ADMIN=0.0.0.0:9090 to reach it).
EXPOSE 4433/udp 9090/tcp
CMD ["omega-node", "serve"]
