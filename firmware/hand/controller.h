// What the hand does with a frame: validation (NACK reasons), targets, relaxed fingers,
// calibration, failsafe, motion at a speed or timed so that every finger arrives together.
// Plain C++ with no AVR dependency: the sketch feeds it frames and the millisecond clock and
// copies pulse widths to the servo driver; the host tests drive it directly.
#ifndef HAND_CONTROLLER_H
#define HAND_CONTROLLER_H

#include <stdint.h>

#include "protocol.h"

namespace hand {

// An answer to send: HELLO, ACK, NACK, FAILSAFE or ARRIVED.
struct Reply {
    uint8_t type;
    uint8_t seq;
    uint8_t len;
    uint8_t payload[proto::STATE_LEN];
};

class Controller {
public:
    // Power-on state: targets 90, nothing driven, failsafe off, speed 0, pulses 544-2400 us.
    void begin(uint32_t now_ms);
    // The HELLO sent at boot (SEQ 0).
    void hello(uint8_t seq, Reply &out) const;
    // Acts on a frame whose length and CRC were good and fills in the answer (always one).
    void handle(const proto::Frame &frame, uint32_t now_ms, Reply &out);
    // Advances the motion and the failsafe clock. Returns true and fills in a frame to send
    // when the failsafe fired on this call (FAILSAFE) or the servos have just reached their
    // targets since the host last heard they were moving (ARRIVED).
    bool tick(uint32_t now_ms, Reply &out);

    uint8_t target(uint8_t finger) const { return target_[finger]; }
    // Current commanded position in thousandths of a logical degree (follows the target at
    // the configured speed, or along a timed move).
    uint32_t position_mdeg(uint8_t finger) const { return pos_[finger]; }
    // The pulse for the current position, in half microseconds, from the finger's calibration.
    uint16_t pulse_half_us(uint8_t finger) const;
    // Bit i set: finger i gets pulses. Clear: never driven since power-on, or relaxed.
    uint8_t driven_mask() const { return driven_; }
    uint8_t status() const;
    uint16_t failsafe_timeout_ms() const { return timeout_ms_; }
    uint16_t speed_dps() const { return speed_dps_; }
    uint16_t pulse_at_0_us(uint8_t finger) const { return pulse_at_0_[finger]; }
    uint16_t pulse_at_180_us(uint8_t finger) const { return pulse_at_180_[finger]; }

private:
    bool moving() const;
    void snap_if_instant();
    void drive(uint8_t mask);
    void start_move(uint16_t duration_ms, uint32_t now_ms);
    void fill_state(uint8_t type, uint8_t seq, Reply &out);

    uint8_t target_[proto::FINGERS];
    uint8_t safe_pose_[proto::FINGERS];
    uint32_t pos_[proto::FINGERS];
    uint32_t from_[proto::FINGERS];  // where a timed move started
    uint16_t pulse_at_0_[proto::FINGERS];
    uint16_t pulse_at_180_[proto::FINGERS];
    uint32_t last_valid_ms_;
    uint32_t last_tick_ms_;
    uint32_t move_start_ms_;
    uint16_t move_ms_;  // length of the timed move in progress, 0 when none
    uint16_t timeout_ms_;
    uint16_t speed_dps_;
    uint8_t action_;
    uint8_t driven_;
    uint8_t failsafe_active_;
    uint8_t fired_;
    uint8_t told_moving_;  // the last state frame sent said "moving"
};

}  // namespace hand

#endif
