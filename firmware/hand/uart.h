// Minimal USART0 driver: interrupt-driven receive into a small ring, blocking transmit.
// Smaller than HardwareSerial and enough for frames of at most 21 bytes.
#ifndef HAND_UART_H
#define HAND_UART_H

#include <stdint.h>

namespace uart {

// 8N1 at the given baud rate, receive interrupt on.
void begin(uint32_t baud);
// The next received byte, or -1 when none is waiting.
int16_t read();
// Sends the bytes, waiting for room in the transmit register.
void write(const uint8_t *data, uint8_t count);

}  // namespace uart

#endif
