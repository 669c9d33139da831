# The service image for AWS Fargate: one image for every service. The mode comes
# from SERVICE_MODE (the deployment sets it per service) or from --mode.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/pipeline-*.whl

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home pipeline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/pipeline-*.whl \
 && rm -rf /wheels
# Numeric, so the runtime can tell it is not root without reading /etc/passwd.
USER 10001
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HEALTH_PORT=8080 SERVICE_MODE=all
# glibc: buffers of a few MiB (inflated pieces, parts) come from the heap and
# are reused, instead of a fresh mmap each, whose every page faults on first
# write (one fault per 4 KiB inflated; docs/decisions.md, issue 10).
ENV MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728
EXPOSE 8080
# Fargate sends SIGTERM and waits for the task's stopTimeout; the service
# drains within SHUTDOWN_GRACE_SECONDS (25 by default), hands back what did
# not finish, and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTH_PORT', '8080') + '/health', timeout=2)"]
ENTRYPOINT ["python", "-m", "pipeline"]
