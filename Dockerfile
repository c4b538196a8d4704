# jitbot container image: build with the locked dependencies, ship one binary on a distroless base.
#
#   docker build -t jitbot:dev .            (or: podman build / buildah bud)
#
# The binary is built WITHOUT the default `demo` feature, so the image contains no emulator and
# refuses `azure.backend = "simulated"`. The runtime stage has no shell and no package manager:
# only glibc, libgcc, CA certificates, /etc/passwd with the `nonroot` user (65532) and the binary.
# It runs with a read-only root file system; the only paths jitbot writes are the SQLite
# directory (/var/lib/jitbot, a volume) and /tmp (mount an emptyDir or tmpfs there).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the build reads (.dockerignore keeps the rest out). The migrations are embedded at
# compile time; benches/ is listed in Cargo.toml and must exist for the manifest to load.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
# --locked: exactly the versions in Cargo.lock, or fail. The cache mounts keep the registry and
# the target directory between builds on one machine; the binary is copied out of the mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin jitbot \
    && install -D -m 0755 target/release/jitbot /out/usr/local/bin/jitbot \
    && install -d -m 0750 /out/var/lib/jitbot /out/etc/jitbot

# gcr.io/distroless/cc-debian12 is Debian 12 (the builder's glibc) with libgcc and CA certificates.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/usr/local/bin/jitbot /usr/local/bin/jitbot
COPY --from=build --chown=65532:65532 /out/var/lib/jitbot /var/lib/jitbot
COPY --from=build /out/etc/jitbot /etc/jitbot
USER 65532:65532
WORKDIR /var/lib/jitbot
ENV JITBOT_CONFIG=/etc/jitbot/jitbot.toml
EXPOSE 8080
# Exec form: no shell is needed (or present). Liveness and readiness are the HTTP endpoints
# /healthz and /readyz, probed by the orchestrator; there is no HEALTHCHECK (no curl in the image).
ENTRYPOINT ["/usr/local/bin/jitbot"]
CMD ["serve"]
