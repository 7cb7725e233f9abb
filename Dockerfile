# swipeloop: one image for every role (api, dataflows, trainer, init); the compose
# command picks the role. Production mode is selected by SWIPELOOP_KAFKA_BOOTSTRAP and
# SWIPELOOP_CLICKHOUSE_URL (see compose.yaml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWIPELOOP_DATA_DIR=/data

WORKDIR /app

# libgomp1: OpenMP runtime needed by LightGBM and faiss-cpu wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The dependencies alone first, read from pyproject.toml: this ~2 GB layer is rebuilt when
# they change, not at every edit of the code below.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md LICENSE ./
COPY sql/ sql/
COPY swipeloop/ swipeloop/
COPY models/ models/
COPY training/ training/
COPY dataflows/ dataflows/
COPY api/ api/
COPY sim/ sim/
COPY cli/ cli/

RUN pip install --no-cache-dir --no-deps -e .

# Non-root runtime user; /data/models and /data/recovery are created here so the named
# volumes compose mounts on them inherit this ownership on first use.
RUN groupadd --system --gid 10001 swipeloop \
    && useradd --system --uid 10001 --gid swipeloop --home-dir /app --shell /usr/sbin/nologin swipeloop \
    && mkdir -p /data/models /data/recovery \
    && chown -R swipeloop:swipeloop /data

USER swipeloop

EXPOSE 8000

CMD ["swipeloop", "--help"]
