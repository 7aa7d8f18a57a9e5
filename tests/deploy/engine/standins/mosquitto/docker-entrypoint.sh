#!/bin/sh
# Started as root: give /mosquitto to the broker's user (mounted read-only files stay as they
# are), then run the command; Mosquitto switches to that user by itself.
set -e
if [ "$(id -u)" = 0 ]; then
    chown -R mosquitto:mosquitto /mosquitto 2>/dev/null || true
fi
exec "$@"
