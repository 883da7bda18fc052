# The coordinator image (CPU): quant-coordinator and qctl built on Debian 12 with the project's
# own scripts, run from a slim Debian 12 with the runtime libraries. (Not built here: this
# machine has no container runtime; docs/operations.md says so.)
FROM debian:12 AS build
COPY . /src
RUN bash /src/scripts/install-deps.sh && bash /src/scripts/build.sh
FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgrpc++1.51 libprotobuf32 \
      libsqlite3-0 libcpp-httplib0.11 libabsl20220623 libtorch1.13 libopenblas0-pthread \
      libonig5 libgloo0 libcurl4 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/coordinator/service/quant-coordinator /usr/local/bin/
COPY --from=build /src/build/coordinator/qctl/qctl /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/quant-coordinator"]
