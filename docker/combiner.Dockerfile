# The combiner of docker-compose.yml: this checkout with its `simulate` extra,
# installed once, when the image is built, instead of at every start.
# `docker compose build combiner` (or `up --build`) rebuilds it after the code
# changed; pip's cache, kept by BuildKit between builds, spares the downloads.
FROM python:3.12.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# The build writes into the source tree, so it runs on a copy that is dropped after.
COPY . /tmp/src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "/tmp/src[simulate]" && rm -rf /tmp/src

WORKDIR /tmp
