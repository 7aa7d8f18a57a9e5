"""The real parts that the tests and the benchmarks both run.

Brokers as processes of their own (Mosquitto, the embedded broker, a cluster of Aedes nodes over
Redis), free loopback ports, a headless Chromium, and waiting on an event with a deadline.
Neither ``tests/`` nor ``bench/`` owns them, so a benchmark never imports a test module. Not
part of the installed package.
"""
