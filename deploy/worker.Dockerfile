# The worker image (CUDA): quant-worker built against the CUDA 13 PyTorch and NCCL, the way
# scripts/gpu-build.sh builds it on the GPU machine (Debian 12 packages in a prefix). (Not built
# here: no container runtime on this machine.)
FROM nvcr.io/nvidia/pytorch:25.10-py3 AS build
# libcurl's headers for s3:// (a build without them refuses s3:// locations).
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cd /src && bash scripts/gpu-build.sh quant-worker
FROM nvcr.io/nvidia/pytorch:25.10-py3
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /tmp/quant-prefix /opt/quant-prefix
COPY --from=build /src/build-gpu/worker/service/quant-worker /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/quant-prefix/usr/lib/x86_64-linux-gnu:/opt/quant-prefix/usr/lib \
    NCCL_NVLS_ENABLE=0
ENTRYPOINT ["/usr/local/bin/quant-worker"]
