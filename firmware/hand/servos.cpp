// Timer1 servo driver: see servos.h.
#include "servos.h"

#include <Arduino.h>
#include <avr/interrupt.h>
#include <avr/io.h>

#include "config.h"
#include "protocol.h"

namespace servos {

namespace {

const uint16_t TICKS_PER_US = F_CPU / 8000000UL;  // prescaler 8
const uint16_t FRAME_TICKS = HAND_SERVO_FRAME_US * TICKS_PER_US;
const uint16_t DEFAULT_TICKS = (HAND_SERVO_MIN_US + HAND_SERVO_MAX_US) / 2 * TICKS_PER_US;
// The compare interrupt is taken this many ticks (10 us) before the edges are due and waits
// for the exact tick, so another interrupt running when it fires (millis' Timer0 overflow,
// the UART) delays the interrupt but not the edge.
const uint16_t LEAD_TICKS = 10 * TICKS_PER_US;

static_assert(F_CPU % 8000000UL == 0, "the timer counts whole half microseconds");
static_assert(proto::MAX_PULSE_US * CHANNELS < HAND_SERVO_FRAME_US, "pulses must fit in a frame");
static_assert((uint32_t)HAND_SERVO_FRAME_US * (F_CPU / 8000000UL) < 65536UL, "frame fits Timer1");

volatile uint8_t *port_[CHANNELS];
uint8_t bit_[CHANNELS];
// Mask used by the interrupt for rising edges: zero while the channel is not attached.
volatile uint8_t active_[CHANNELS];
volatile uint16_t width_[CHANNELS];

// Interrupt state: the slot now starting (CHANNELS = the gap) and the edges due at its start.
uint8_t slot = CHANNELS;
uint16_t used;  // ticks of the frame taken by the pulses so far
volatile uint8_t no_port;  // stands in for a port when an edge has no pin
volatile uint8_t *fall_port = &no_port;
volatile uint8_t *rise_port = &no_port;
uint8_t fall_mask;
uint8_t rise_mask;

void set_active(uint8_t channel, bool on) {
    if (channel >= CHANNELS) return;
    active_[channel] = on ? bit_[channel] : 0;  // one byte: no need to block interrupts
}

}  // namespace

void begin(const uint8_t pins[CHANNELS]) {
    for (uint8_t i = 0; i < CHANNELS; ++i) {
        const uint8_t port = digitalPinToPort(pins[i]);
        port_[i] = portOutputRegister(port);
        bit_[i] = digitalPinToBitMask(pins[i]);
        *port_[i] &= (uint8_t)~bit_[i];
        *portModeRegister(port) |= bit_[i];
        active_[i] = 0;
        width_[i] = DEFAULT_TICKS;
    }
    const uint8_t sreg = SREG;
    cli();
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11);  // CTC on OCR1A, clk / 8
    TCNT1 = 0;
    OCR1A = 999;                      // a short first gap
    TIFR1 = _BV(OCF1A);
    TIMSK1 = _BV(OCIE1A);
    SREG = sreg;
}

void attach(uint8_t channel) {
    set_active(channel, true);
}

void relax(uint8_t channel) {
    // The interrupt always ends a slot's pulse by its pin's bit, so a pulse that has started
    // falls at its normal time; without the active mask no new one rises.
    set_active(channel, false);
}

void write_half_us(uint8_t channel, uint16_t half_us) {
    if (channel >= CHANNELS) return;
    const uint16_t ticks = (uint16_t)(half_us * (TICKS_PER_US / 2));
    const uint8_t sreg = SREG;
    cli();
    width_[channel] = ticks;
    SREG = sreg;
}

}  // namespace servos

// A compare match comes LEAD_TICKS before the slot that is running ends. The interrupt waits
// for that moment, then writes the two edges worked out by the previous interrupt back to back:
// the slot's channel falls, the next one rises. Every pulse therefore lasts exactly its slot
// (to a CPU cycle or two), whatever the interrupt latency up to LEAD_TICKS.
ISR(TIMER1_COMPA_vect) {
    using namespace servos;
    while (TCNT1 < LEAD_TICKS) {
    }
    *fall_port &= (uint8_t)~fall_mask;
    *rise_port |= rise_mask;

    const uint8_t now = slot;
    uint16_t ticks;
    if (now < CHANNELS) {
        ticks = width_[now];
        used += ticks;
    } else {
        ticks = FRAME_TICKS - used;
        used = 0;
    }
    OCR1A = ticks - 1;  // the timer restarted at the match: the slot is ticks long, match to match

    // The edges for the end of this slot: this channel falls, the next one rises.
    const uint8_t next = now < CHANNELS ? now + 1 : 0;
    if (now < CHANNELS) {
        fall_port = port_[now];
        fall_mask = bit_[now];
    } else {
        fall_port = &no_port;
        fall_mask = 0;
    }
    if (next < CHANNELS) {
        rise_port = port_[next];
        rise_mask = active_[next];
    } else {
        rise_port = &no_port;
        rise_mask = 0;
    }
    slot = next;
}
