# Images of the product's processes and of the Stripe simulator (used by docker-compose.yml).
#
# The product image holds only the product: ingestor/, projections/, schemas/, plumbing/, service/
# and docs/ (the web process serves the operating guide from it); not the local-stack launcher
# (stack/) nor the simulator. The install is editable so docs/ stays beside the packages.
# The Revenue page's chart library, installed from package-lock.json (served from /app/node_modules).
FROM node:20-slim AS page-packages
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts

FROM python:3.11-slim AS product
WORKDIR /app
COPY --from=page-packages /app/node_modules node_modules
COPY pyproject.toml README.md ./
COPY ingestor ingestor
COPY projections projections
COPY schemas schemas
COPY plumbing plumbing
COPY service service
COPY docs docs
RUN pip install --no-cache-dir -e .
ENTRYPOINT []

# The Stripe simulator, for trying the stack without a Stripe account (`--target simulator`).
FROM python:3.11-slim AS simulator
WORKDIR /app
COPY stripe_sim stripe_sim
RUN pip install --no-cache-dir aiohttp==3.14.5 orjson==3.13.0
ENTRYPOINT []
