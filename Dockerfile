# syntax=docker/dockerfile:1
# The worker image for teams that build with Docker or Buildx:
#
#   docker buildx build --build-arg REVISION="$(git rev-parse HEAD)" -t flext-kubernetes:0.1.0 .
#
# NOT EXERCISED by this repository's tests or CI: the development machines have no container
# daemon. The image they build and test is scripts/build-image's (an OCI layout, no daemon); this
# file reuses that script, so the files, owners and modes are the same, and repeats its config
# below (user, entrypoint, command, environment, labels): keep the two in step. The digest is not
# the same (Docker writes its own tar and history).
#
# At the repository root, not in deploy/: the build context must be the repository (Cargo.toml,
# src/, scripts/), and this is where `docker build .` and CI actions look without a `-f`.

# The toolchain of the development machines; bookworm's CA bundle is the one scripts/build-image
# copies from the host there.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools file python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /flext-kubernetes
COPY . .
# The layout's one layer, unpacked with its owners and modes: what `FROM scratch` gets below.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/flext-kubernetes/target \
    scripts/build-image --output /image \
    && layer=$(python3 -c 'import json; m = json.load(open("/image/index.json"))["manifests"][0]["digest"][7:]; print(json.load(open("/image/blobs/sha256/" + m))["layers"][0]["digest"][7:])') \
    && mkdir /rootfs && tar -xzf "/image/blobs/sha256/$layer" --same-owner --same-permissions --numeric-owner -C /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
# Said again, in case a builder sets copied files to 0:0.
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot /home/nonroot
USER 65532:65532
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /
LABEL org.opencontainers.image.source="https://github.com/flext/flext-kubernetes" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.title="flext-kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/flext-kubernetes"]
CMD ["run", "--config", "/etc/flext/config.yaml"]
