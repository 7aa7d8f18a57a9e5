"""The embedded broker (amqtt, the zero-setup default) and the ACL rules it shares with
Mosquitto."""
