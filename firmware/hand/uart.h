// Minimal USART0 driver: interrupt-driven receive and transmit through two small rings.
// Smaller than HardwareSerial and enough for frames of at most 21 bytes.
#ifndef HAND_UART_H
#define HAND_UART_H

#include <stdint.h>

namespace uart {

// 8N1 at the given baud rate, interrupts on.
void begin(uint32_t baud);
// The next received byte, or -1 when none is waiting.
int16_t read();
// Queues the bytes for sending; waits only while the transmit ring is full.
void write(const uint8_t *data, uint8_t count);

}  // namespace uart

#endif
