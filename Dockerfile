# presence-sidecar: a static binary on a minimal, non-root base image.
#   docker build -t presence-sidecar .
#   docker run -e UPSTREAM_URL=http://conversation:3000 -p 8080:8080 presence-sidecar
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version reported as the OpenTelemetry service.version
# (docker build --build-arg VERSION=v1.2.3 .); empty: the Go build info.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X github.com/presence-sidecar/presence-sidecar/internal/telemetry.version=${VERSION}" \
      -o /out/presence-sidecar ./cmd/presence-sidecar \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/presence-sidecar /presence-sidecar
# DATA_DIR must be writable by the non-root user (uid 65532); mount a volume there.
COPY --from=build --chown=65532:65532 /out/data /data
ENV LISTEN_ADDR=:8080 \
    ADMIN_ADDR=:9090 \
    DATA_DIR=/data
EXPOSE 8080 9090
USER 65532:65532
VOLUME ["/data"]
# The image has no shell or curl: the binary checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/presence-sidecar", "healthcheck"]
ENTRYPOINT ["/presence-sidecar"]
