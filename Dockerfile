# kfleet in one image: the same binary for `serve`, `ensure` (init containers, DaemonSets) and the
# CLI. Multi-stage: the build stage compiles with the locked dependencies; the runtime stage is a
# slim Debian with only what kfleet runs (CA roots for HTTPS, kmod for `ensure --install`), and
# runs as an unprivileged user unless a pod says otherwise (loading a module needs root and
# CAP_SYS_MODULE: the init container examples in docs/operations.md set both).
#
#   docker build -t kfleet .
#   docker run --rm kfleet report --help

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# A C compiler and make for the crates that build C (bundled SQLite, liblzma, zstd, ring).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY assets ./assets
COPY migrations ./migrations
COPY sample-data ./sample-data
COPY benches ./benches
RUN cargo build --release --locked \
 && install -m 0755 target/release/kfleet /usr/local/bin/kfleet

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates kmod \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/kfleet /usr/local/bin/kfleet
# The state directory of `serve` (kfleet.db, caches), writable by the unprivileged user.
ENV XDG_STATE_HOME=/var/lib/kfleet
RUN install -d -o 65532 -g 65532 /var/lib/kfleet
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kfleet"]
CMD ["--help"]
