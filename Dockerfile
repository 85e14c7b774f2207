# loa-meta on a GPU: the official TensorFlow image of the version the test suite runs on.
# Build:  docker build -t loa-meta .
# Run:    docker run --gpus all -v /path/to/data:/data -v "$PWD/runs:/runs" -p 6006:6006 \
#           loa-meta experiments.quickstart --workdir=/runs/quickstart
# See docs/docker.md.
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# The repository (filtered by .dockerignore) is installed as a regular, non-editable package;
# the base image's TensorFlow already satisfies the tensorflow requirement and is kept.
WORKDIR /opt/loa-meta
COPY . .
# DL3013 (pin versions): this installs the local package; its dependencies are bounded in pyproject.toml
# and TensorFlow is pinned by the base image tag.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[demo]"

# Run as an unprivileged user (loa, uid 10001; see docs/docker.md for bind-mount permissions).
# /runs is the place for mounted outputs (checkpoints, TensorBoard).
RUN useradd --create-home --uid 10001 --shell /bin/bash loa \
    && mkdir -p /work /runs /data \
    && chown 10001:10001 /work /runs
USER 10001:10001
ENV MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /work

# TensorBoard (docker run ... --entrypoint tensorboard loa-meta --logdir=/runs --bind_all).
EXPOSE 6006

# `docker run loa-meta MODULE --flags` runs `python -m MODULE --flags`; without arguments it
# prints the quickstart's flags.
ENTRYPOINT ["python", "-m"]
CMD ["experiments.quickstart", "--helpfull"]
