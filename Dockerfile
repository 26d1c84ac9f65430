# pokegen's app image: Flask + the generation engine under uWSGI, on Debian's Python 3.11.
# Builds with the classic builder (docker-compose 1.29's `docker-compose build`): no BuildKit syntax.
#
# Targets:
#   app       (default) the checkpoint in ./checkpoint is baked in, below the code, so a code change
#             rebuilds only the last small layer.
#   app-mounted-checkpoint  no checkpoint inside; mount one at /srv/pokegen/checkpoint
#             (see deploy/docker-compose.checkpoint-volume.yml).
ARG BASE_IMAGE=debian:bookworm-slim

# ---- build: compilers and headers live only here --------------------------------------------
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
COPY requirements.txt requirements-nodeps.txt /tmp/pip/
# pip reads its settings from PIP_* variables: a host whose containers cannot reach PyPI passes a
# mirror or a folder of packages here (CI's build machines do). Unset by default.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST
# TensorFlow is installed once, as the CPU build: gpt-2-simple goes in without its dependencies.
# pip's compiled bytecode stays: the read-only root filesystem could not cache it at run time.
RUN set -eu; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/pip/requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -r /tmp/pip/requirements-nodeps.txt
# The engine's kernels are compiled here: the bfloat16 op against this TensorFlow, and the
# int8 decoder's AVX-512 VNNI, AVX2 and generic builds. After that TensorFlow's
# C++ headers and libclang serve nothing, and they are large: they stay out of the image.
COPY app/engine/kernels/ /tmp/kernels/
RUN set -eu; \
    /opt/venv/bin/python /tmp/kernels/build.py --output /opt/kernels/packed_bf16_matmul.so; \
    cp /tmp/kernels/native_decoder_*.so /opt/kernels/; \
    rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include; \
    /opt/venv/bin/pip uninstall -y -q libclang pip wheel

# ---- runtime: Python, the venv and an unprivileged user ---------------------------------------
FROM ${BASE_IMAGE} AS runtime
# libpython3.11: the uWSGI binary built above embeds Python through it; libgomp1: the int8
# decoder's threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libpython3.11 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 pokegen \
 && useradd --uid 10001 --gid pokegen --home-dir /srv/pokegen --no-create-home \
      --shell /usr/sbin/nologin pokegen \
 && mkdir -p /srv/pokegen /run/pokegen \
 && chown pokegen:pokegen /run/pokegen
# Settings come before the large venv layer: each later instruction is a new layer on top of it.
LABEL org.opencontainers.image.title="pokegen-app" \
      org.opencontainers.image.description="pokegen: GPT-2 episode generator (Flask, uWSGI)"
# uwsgi.ini reads VIRTUAL_ENV and POKEGEN_SOCKET_DIR (each replica's socket there, which nginx
# finds as app-<host name>.sock); the app reads CHECKPOINT_DIR and the rest.
# /tmp is the only scratch space (HOME too): the root filesystem can be read-only.
# UTF-8 for files opened without an encoding (gpt-2-simple's tokenizer files): uWSGI embeds
# Python, so Python's own C-locale coercion does not happen.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUTF8=1 \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp \
    POKEGEN_SOCKET_DIR=/run/pokegen \
    CHECKPOINT_DIR=/srv/pokegen/checkpoint \
    RUN_NAME=run1
WORKDIR /srv/pokegen
USER pokegen
# Healthy = /readyz answers 200 (the model is loaded). The long start period covers a slow first
# load (a cold disk, a throttled CPU); readiness is reported as soon as the check passes.
HEALTHCHECK --interval=5s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "/usr/local/lib/pokegen/uwsgi_readyz.py"]
STOPSIGNAL SIGTERM
CMD ["uwsgi", "--ini", "/srv/pokegen/uwsgi.ini"]
COPY deploy/uwsgi_readyz.py deploy/uwsgi_drain.py /usr/local/lib/pokegen/
COPY --from=build /opt/venv /opt/venv

# ---- app-mounted-checkpoint: the code only; the checkpoint comes from a volume ----------------
FROM runtime AS app-mounted-checkpoint
COPY uwsgi.ini wsgi.py ./
COPY pokegen/ ./pokegen/
COPY app/ ./app/
COPY --from=build /opt/kernels/ ./app/engine/kernels/

# ---- app (default): checkpoint first, code last, so a code change reuses the checkpoint layer -
FROM runtime AS app
COPY checkpoint/ ./checkpoint/
COPY uwsgi.ini wsgi.py ./
COPY pokegen/ ./pokegen/
COPY app/ ./app/
COPY --from=build /opt/kernels/ ./app/engine/kernels/
