# Builds the operator image: `docker build -t <your registry>/baseten-secrets-operator .`
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin baseten-secrets-operator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/baseten-secrets-operator /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/baseten-secrets-operator"]
