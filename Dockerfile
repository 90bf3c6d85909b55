# The image docker-compose.yml builds: synchro-sync with the S3 SDK and Flower (add extras as needed).
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
RUN pip install --no-cache-dir ".[amazon,flower]"
WORKDIR /data
CMD ["synchro-sync", "run"]
