"""The services: the arbiter (one writer of desired state), the device service, and the
whole stack in one process."""
