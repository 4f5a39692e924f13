# syntax=docker/dockerfile:1
# msnode, CPU image.
#   docker build --build-arg MSNODE_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t msnode .
#   docker run -d -p 11112:11112 -v msnode-data:/var/lib/msnode msnode
# A site mounts its own /etc/msnode/msnode.toml (README, "Operating msnode").
# `make test-docker` runs these stages without a Docker engine and checks the result.

FROM rust:1.94-slim-bookworm AS build
# CharLS (JPEG-LS) is built with CMake and a C++ compiler; ring and OpenJPEG with the C compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG MSNODE_GIT_COMMIT=unknown
RUN MSNODE_GIT_COMMIT="$MSNODE_GIT_COMMIT" cargo build --release --locked --bin msnode \
    && packaging/packaged-config.sh config/msnode.example.toml > target/msnode.toml

# ONNX Runtime comes from its PyPI wheel, as in development: only the library and its licence.
FROM python:3.11-slim-bookworm AS onnxruntime
COPY packaging/docker/onnxruntime-cpu.txt /tmp/
RUN pip install --no-cache-dir --no-deps --target /ort -r /tmp/onnxruntime-cpu.txt

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/msnode --shell /usr/sbin/nologin msnode \
    && install -d -o msnode -g msnode -m 0750 /var/lib/msnode
COPY --from=build /src/target/release/msnode /usr/bin/msnode
COPY --from=build /src/target/msnode.toml /etc/msnode/msnode.toml
COPY --from=build /src/models/realbg /usr/share/msnode/models/realbg
COPY --from=build /src/models/realbg-int8 /usr/share/msnode/models/realbg-int8
COPY --from=build /src/models/single-visit /usr/share/msnode/models/single-visit
COPY --from=build /src/packaging/docker/healthcheck /usr/bin/msnode-healthcheck
COPY --from=onnxruntime /ort/onnxruntime/capi/libonnxruntime.so.1.31.1 /usr/lib/msnode/
COPY --from=onnxruntime /ort/onnxruntime/LICENSE /ort/onnxruntime/ThirdPartyNotices.txt /usr/share/doc/msnode/onnxruntime/
# msnode (10001): numeric, so that the host can resolve it.
USER 10001:10001
VOLUME ["/var/lib/msnode"]
# DICOM, DICOM over TLS (when [node] tls_port is set), admin HTTP.
EXPOSE 11112 2762 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD ["/usr/bin/msnode-healthcheck"]
ENTRYPOINT ["/usr/bin/msnode", "--config", "/etc/msnode/msnode.toml"]
CMD ["serve"]
