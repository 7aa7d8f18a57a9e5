"""The serial side: the framed protocol, the serial link (the only pyserial user), and the
hand drivers the device service drives the firmware through."""
