# The hand-mqtt services (arbiter, device, simulated hand) on Python 3.11, as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY firmware ./firmware
COPY hand_mqtt ./hand_mqtt
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --gid dialout --no-create-home --home-dir /nonexistent hand \
    && install -d -o hand -g dialout /data
USER hand
WORKDIR /tmp
# Reads HAND_MQTT_BROKER, HAND_MQTT_BASE, HAND_MQTT_HAND, HAND_MQTT_SERIAL from the environment.
ENTRYPOINT []
CMD ["hand-mqtt", "--help"]
