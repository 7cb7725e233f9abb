# swipeloop: one image for every role (api, dataflows, trainer, init); the compose
# command picks the role. Production mode is selected by SWIPELOOP_KAFKA_BOOTSTRAP and
# SWIPELOOP_CLICKHOUSE_URL (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWIPELOOP_DATA_DIR=/data

WORKDIR /app

# libgomp1: OpenMP runtime needed by LightGBM and faiss-cpu wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md LICENSE ./
COPY sql/ sql/
COPY swipeloop/ swipeloop/
COPY models/ models/
COPY training/ training/
COPY dataflows/ dataflows/
COPY api/ api/
COPY sim/ sim/
COPY cli/ cli/

RUN pip install --no-cache-dir -e .

# Non-root runtime user; /data is created here so named volumes mounted on it
# inherit this ownership on first use.
RUN groupadd --system --gid 10001 swipeloop \
    && useradd --system --uid 10001 --gid swipeloop --home-dir /app --shell /usr/sbin/nologin swipeloop \
    && mkdir -p /data/models \
    && chown -R swipeloop:swipeloop /data

USER swipeloop

EXPOSE 8000

CMD ["swipeloop", "--help"]
