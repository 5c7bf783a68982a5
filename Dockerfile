# One image for every Pudato process: the Celery workers, beat, Flower and the CLI.
# pycurl, psycopg2-binary and duckdb install from manylinux wheels, so no compiler is needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY . .
RUN pip install . \
    && useradd --create-home --uid 1000 pudato \
    && mkdir -p /data \
    && chown pudato:pudato /data \
    && if [ -d dbt ]; then chown -R pudato:pudato dbt; fi

# The code stays root-owned; the process writes only to /data (a fresh named
# volume mounted there takes the owner above) and to dbt/ (target/, logs/).
USER pudato

CMD ["pudato", "--help"]
