FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
# the rocksdb extra: the image can keep its table on disk (HEALTH_STORE=rocksdb://, docker-compose.yml)
RUN pip install --no-cache-dir ".[rocksdb]"
# the worker's local table files (per app id below it); owned by the user the worker runs as, so a named
# volume mounted there starts with that owner (/app is root's: Faust's default, in the cwd, is not writable)
ENV HEALTH_DATA_DIR=/var/lib/customer-health
RUN mkdir -p "$HEALTH_DATA_DIR" && chown nobody "$HEALTH_DATA_DIR"
USER nobody
EXPOSE 6066
CMD ["health", "worker"]
