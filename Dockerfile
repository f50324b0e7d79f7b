# The operator's image: one static binary, run as 65532, and nothing else (no shell, no
# libraries, no package manager). `make image` builds the same image without a container
# engine. For the platform docker builds for:
#   docker build -t <your registry>/baseten-secrets-operator .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN target="$(uname -m)-unknown-linux-musl" \
    && TARGET_CC=musl-gcc cargo build --release --locked --target "$target" --bin baseten-secrets-operator \
    && cp "target/$target/release/baseten-secrets-operator" /baseten-secrets-operator

FROM scratch
COPY --from=build /baseten-secrets-operator /baseten-secrets-operator
USER 65532:65532
ENTRYPOINT ["/baseten-secrets-operator"]
