"""The browser page: static files that talk MQTT over websockets, and the server that hands
them out (``hand-mqtt web``, and ``hand-mqtt up`` beside its embedded broker).

The page (``static/``) is plain HTML, CSS and JavaScript with no build step; its one library is
MQTT.js, vendored at a pinned version with its licence and the notices of what its bundle holds
(``static/vendor/``). See docs/web.md.
"""

from hand_mqtt.clients.web.server import (
    MQTT_JS_SHA256,
    MQTT_JS_VERSION,
    WebServer,
    check_broker_ws,
    page_problem,
)

__all__ = ["MQTT_JS_SHA256", "MQTT_JS_VERSION", "WebServer", "check_broker_ws", "page_problem"]
