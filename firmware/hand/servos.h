// Five-channel servo driver on Timer1 (ATmega328P).
//
// Timer1 runs in CTC mode at F_CPU / 8 (0.5 us per tick at 16 MHz). The 20 ms frame is cut
// into six slots: one per channel, as long as that channel's pulse, then a gap that fills up
// the frame. The compare interrupt fires 10 us before a slot ends, waits for the exact tick,
// then ends that slot's pulse and starts the next one: each pulse lasts exactly its slot even
// when another interrupt (millis, the UART) delays this one.
// Every pin is an output held low from begin(): a channel pulses only while attached, and a
// relaxed (detached) channel gets no pulse at all, not even a short one.
#ifndef HAND_SERVOS_H
#define HAND_SERVOS_H

#include <stdint.h>

namespace servos {

const uint8_t CHANNELS = 5;

// Sets up Timer1 and makes the pins (Arduino numbering) outputs held low.
void begin(const uint8_t pins[CHANNELS]);
// Starts pulsing the channel's pin from its next slot on. Idempotent.
void attach(uint8_t channel);
// Stops pulsing the channel: a pulse under way ends at its normal width, then the pin stays
// low. Idempotent.
void relax(uint8_t channel);
// Sets the channel's pulse width in half microseconds.
void write_half_us(uint8_t channel, uint16_t half_us);

}  // namespace servos

#endif
