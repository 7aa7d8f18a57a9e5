// USART0 driver: see uart.h.
//
// Transmission is interrupt-driven (data register empty interrupt) rather than polled: the
// loop never waits for the wire, and it does not depend on the UDRE0 flag being set after
// the transmitter is (re-)enabled, which simavr does not model (a polled first byte waits
// forever there).
#include "uart.h"

#include <avr/interrupt.h>
#include <avr/io.h>

namespace uart {

namespace {

const uint8_t RX_SIZE = 32;  // powers of two; 32 bytes is ~2.8 ms of data at 115200 baud
const uint8_t TX_SIZE = 32;
volatile uint8_t rx_buf[RX_SIZE];
volatile uint8_t rx_head;  // written by the receive interrupt
volatile uint8_t rx_tail;  // written by read()
volatile uint8_t tx_buf[TX_SIZE];
volatile uint8_t tx_head;  // written by write()
volatile uint8_t tx_tail;  // written by the transmit interrupt

}  // namespace

void begin(uint32_t baud) {
    // Double speed mode: UBRR = F_CPU / (8 * baud) - 1, rounded (16 for 115200 at 16 MHz).
    const uint16_t ubrr = (uint16_t)((F_CPU + 4UL * baud) / (8UL * baud) - 1UL);
    UBRR0H = (uint8_t)(ubrr >> 8);
    UBRR0L = (uint8_t)ubrr;
    UCSR0A = _BV(U2X0);
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
        const uint8_t head = tx_head;
        const uint8_t next = (uint8_t)((head + 1) & (TX_SIZE - 1));
        while (next == tx_tail) {
            // ring full: the interrupt drains it
        }
        tx_buf[head] = *data++;
        tx_head = next;
        UCSR0B |= _BV(UDRIE0);
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

ISR(USART_UDRE_vect) {
    using namespace uart;
    const uint8_t tail = tx_tail;
    if (tail == tx_head) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);  // nothing left to send
        return;
    }
    UDR0 = tx_buf[tail];
    tx_tail = (uint8_t)((tail + 1) & (TX_SIZE - 1));
}
