// What the hand does with a frame: validation (NACK reasons), targets, failsafe, motion speed.
// Plain C++ with no AVR dependency: the sketch feeds it frames and the millisecond clock and
// copies positions to the servo driver; the host tests drive it directly.
#ifndef HAND_CONTROLLER_H
#define HAND_CONTROLLER_H

#include <stdint.h>

#include "protocol.h"

namespace hand {

// An answer to send: HELLO, ACK, NACK or FAILSAFE.
struct Reply {
    uint8_t type;
    uint8_t seq;
    uint8_t len;
    uint8_t payload[6];
};

class Controller {
public:
    // Power-on state: targets 90, nothing driven, failsafe off, speed 0.
    void begin(uint32_t now_ms);
    // The HELLO sent at boot (SEQ 0).
    void hello(uint8_t seq, Reply &out) const;
    // Acts on a frame whose length and CRC were good and fills in the answer (always one).
    void handle(const proto::Frame &frame, uint32_t now_ms, Reply &out);
    // Advances the motion and the failsafe clock; returns true and fills in a FAILSAFE
    // frame when the failsafe fired on this call.
    bool tick(uint32_t now_ms, Reply &out);

    uint8_t target(uint8_t finger) const { return target_[finger]; }
    // Current commanded servo position in thousandths of a degree (follows the target at the
    // configured speed).
    uint32_t position_mdeg(uint8_t finger) const { return pos_[finger]; }
    // Bit i set: finger i has had a target and its servo is driven.
    uint8_t driven_mask() const { return driven_; }
    uint8_t status() const;
    uint16_t failsafe_timeout_ms() const { return timeout_ms_; }
    uint16_t speed_dps() const { return speed_dps_; }

private:
    void snap_if_instant();
    void fill_angles(uint8_t type, uint8_t seq, Reply &out) const;

    uint8_t target_[proto::FINGERS];
    uint8_t safe_pose_[proto::FINGERS];
    uint32_t pos_[proto::FINGERS];
    uint32_t last_valid_ms_;
    uint32_t last_tick_ms_;
    uint16_t timeout_ms_;
    uint16_t speed_dps_;
    uint8_t action_;
    uint8_t driven_;
    uint8_t failsafe_active_;
    uint8_t fired_;
};

}  // namespace hand

#endif
