// USART0 driver: see uart.h.
#include "uart.h"

#include <avr/interrupt.h>
#include <avr/io.h>

namespace uart {

namespace {

const uint8_t RX_SIZE = 32;  // a power of two; ~2.8 ms of data at 115200 baud
volatile uint8_t rx_buf[RX_SIZE];
volatile uint8_t rx_head;  // written by the interrupt
volatile uint8_t rx_tail;  // written by read()

}  // namespace

void begin(uint32_t baud) {
    // Double speed mode: UBRR = F_CPU / (8 * baud) - 1, rounded (16 for 115200 at 16 MHz).
    const uint16_t ubrr = (uint16_t)((F_CPU + 4UL * baud) / (8UL * baud) - 1UL);
    UBRR0H = (uint8_t)(ubrr >> 8);
    UBRR0L = (uint8_t)ubrr;
    // Read-modify-write (the avr-libc idiom) rather than a plain store: simavr models UDRE0
    // as a writable bit and a store of 0 would leave the transmitter looking busy forever.
    UCSR0A |= _BV(U2X0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);  // 8 data bits, no parity, 1 stop bit
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
}

int16_t read() {
    const uint8_t tail = rx_tail;
    if (tail == rx_head) return -1;
    const uint8_t byte = rx_buf[tail];
    rx_tail = (uint8_t)((tail + 1) & (RX_SIZE - 1));
    return byte;
}

void write(const uint8_t *data, uint8_t count) {
    while (count--) {
        while (!(UCSR0A & _BV(UDRE0))) {
        }
        UDR0 = *data++;
    }
}

}  // namespace uart

ISR(USART_RX_vect) {
    using namespace uart;
    const uint8_t byte = UDR0;
    const uint8_t head = rx_head;
    const uint8_t next = (uint8_t)((head + 1) & (RX_SIZE - 1));
    if (next != rx_tail) {  // a full ring drops the byte; the frame CRC catches the loss
        rx_buf[head] = byte;
        rx_head = next;
    }
}
