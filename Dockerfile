# Image for the ingestor's processes (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingestor ingestor
COPY projections projections
COPY schemas schemas
COPY plumbing plumbing
COPY stack stack
COPY stripe_sim stripe_sim
RUN pip install --no-cache-dir .
ENTRYPOINT []
