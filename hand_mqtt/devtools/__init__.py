"""Development tools: the simulated firmware and its ports, the AVR emulator, building and
flashing the bundled firmware."""
