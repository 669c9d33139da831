# The service image for AWS Fargate: one image, the mode is the command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 pipeline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER pipeline
ENV PYTHONUNBUFFERED=1 HEALTH_PORT=8080
EXPOSE 8080
# Fargate sends SIGTERM and waits 30 s; the service drains within
# SHUTDOWN_GRACE_SECONDS (25 by default) and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"HEALTH_PORT\"]}/health', timeout=2)"
ENTRYPOINT ["python", "-m", "pipeline"]
CMD ["--mode", "all"]
