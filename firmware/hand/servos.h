// Five-channel servo driver on Timer1 (ATmega328P).
//
// Timer1 runs in CTC mode at F_CPU / 8 (0.5 us per tick at 16 MHz). The 20 ms frame is cut
// into six slots: one per channel, as long as that channel's pulse, then a gap that fills up
// the frame. The compare interrupt fires 10 us before a slot ends, waits for the exact tick,
// then ends that slot's pulse and starts the next one: each pulse lasts exactly its slot even
// when another interrupt (millis, the UART) delays this one.
// A channel's pin is left alone (input, not driven) until attach() is called for it.
#ifndef HAND_SERVOS_H
#define HAND_SERVOS_H

#include <stdint.h>

namespace servos {

const uint8_t CHANNELS = 5;

// Sets up Timer1 and remembers the pins (Arduino numbering); does not touch them.
void begin(const uint8_t pins[CHANNELS]);
// Starts driving the channel's pin (output, one pulse per frame). Idempotent.
void attach(uint8_t channel);
// Sets the channel's position in thousandths of a degree (0..180000).
void write_mdeg(uint8_t channel, uint32_t mdeg);
// The pulse width in microseconds the channel is set to (for diagnostics).
uint16_t pulse_us(uint8_t channel);

}  // namespace servos

#endif
