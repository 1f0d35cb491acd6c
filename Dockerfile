# syntax=docker/dockerfile:1
# One image for every tuneline service; the service is the argument:
#   docker run tuneline training        (registry, curation, training, merging, evaluation, rollout, serving)
#   docker run tuneline cli models list (the operator's CLI)
# GPU image: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 --build-arg EXTRAS=postgres,s3,train,vllm
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=postgres,s3,train
RUN python -m venv /opt/tuneline
ENV PATH=/opt/tuneline/bin:$PATH
# torch first, from its own index, so nothing else pulls a different build
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
RUN pip install ".[${EXTRAS}]"

FROM python:3.11-slim
ENV PATH=/opt/tuneline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TUNELINE_SERVING_HOST=0.0.0.0 \
    TUNELINE_METRICS_PORT=9464
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/tuneline tuneline \
    && mkdir -p /work /models \
    && chown tuneline:tuneline /work /models
COPY --from=build /opt/tuneline /opt/tuneline
USER 10001:10001
WORKDIR /home/tuneline
ENV TUNELINE_MODEL_CACHE=/models HF_HOME=/models/hf
EXPOSE 8000 9464
ENTRYPOINT ["python", "-m", "services"]
CMD ["--help"]
