// Frame handling, failsafe and motion: see controller.h and docs/serial-protocol.md.
#include "controller.h"

#include "config.h"

namespace hand {

namespace {

// Payload layouts (docs/serial-protocol.md): where each field starts.
const uint8_t SET_SOME_HEADER = 1;  // mask, then the masked angles
const uint8_t MOVE_HEADER = 3;      // duration (u16), mask, then the masked angles
const uint8_t RELAX_LEN = 1;        // mask
// CONFIGURE: failsafe timeout (u16), action, safe pose (five angles), speed (u16).
const uint8_t CONFIGURE_ACTION = 2;
const uint8_t CONFIGURE_SAFE_POSE = 3;
const uint8_t CONFIGURE_SPEED = CONFIGURE_SAFE_POSE + proto::FINGERS;
const uint8_t CONFIGURE_LEN = CONFIGURE_SPEED + 2;
// CALIBRATE: mask, pulse at logical 0 (u16), pulse at logical 180 (u16), in microseconds.
const uint8_t CALIBRATE_PULSE_AT_0 = 1;
const uint8_t CALIBRATE_PULSE_AT_180 = 3;
const uint8_t CALIBRATE_LEN = CALIBRATE_PULSE_AT_180 + 2;
const uint8_t ACTION_HOLD = 0;
const uint8_t ACTION_SAFE_POSE = 1;
const uint32_t MAX_STEP_MS = 1000;  // caps one motion step after a long pause
const uint32_t FULL_SCALE_MDEG = (uint32_t)proto::MAX_ANGLE * 1000u;
const uint8_t FRACTION_BITS = 14;  // a timed move's progress, 0 .. 1 << 14

uint32_t mdeg(uint8_t angle) {
    return (uint32_t)angle * 1000u;
}

uint16_t u16_at(const uint8_t *p) {
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

bool angles_ok(const uint8_t *angles, uint8_t count) {
    for (uint8_t i = 0; i < count; ++i) {
        if (angles[i] > proto::MAX_ANGLE) return false;
    }
    return true;
}

bool pulse_ok(uint16_t us) {
    return us >= proto::MIN_PULSE_US && us <= proto::MAX_PULSE_US;
}

bool mask_ok(uint8_t mask) {
    return mask != 0 && !(mask & (uint8_t)~proto::ALL_FINGERS);
}

uint8_t bits_set(uint8_t v) {
    uint8_t n = 0;
    for (; v; v &= (uint8_t)(v - 1)) ++n;
    return n;
}

// The point `fraction` (out of 1 << FRACTION_BITS) of the way from `from` to `to`.
uint32_t between(uint32_t from, uint32_t to, uint32_t fraction) {
    if (to >= from) return from + (((to - from) * fraction) >> FRACTION_BITS);
    return from - (((from - to) * fraction) >> FRACTION_BITS);
}

void nack(uint8_t seq, uint8_t reason, Reply &out) {
    out.type = proto::NACK;
    out.seq = seq;
    out.len = proto::NACK_LEN;
    out.payload[0] = reason;
}

}  // namespace

void Controller::begin(uint32_t now_ms) {
    for (uint8_t i = 0; i < proto::FINGERS; ++i) {
        target_[i] = HAND_DEFAULT_ANGLE;
        safe_pose_[i] = HAND_DEFAULT_SAFE_ANGLE;
        pos_[i] = from_[i] = mdeg(HAND_DEFAULT_ANGLE);
        pulse_at_0_[i] = HAND_SERVO_MIN_US;
        pulse_at_180_[i] = HAND_SERVO_MAX_US;
    }
    last_valid_ms_ = now_ms;
    last_tick_ms_ = now_ms;
    move_start_ms_ = now_ms;
    move_ms_ = 0;
    timeout_ms_ = 0;
    speed_dps_ = 0;
    action_ = ACTION_HOLD;
    driven_ = 0;
    failsafe_active_ = 0;
    fired_ = 0;
    told_moving_ = 0;
}

bool Controller::moving() const {
    for (uint8_t i = 0; i < proto::FINGERS; ++i) {
        if (pos_[i] != mdeg(target_[i])) return true;
    }
    return false;
}

uint8_t Controller::status() const {
    uint8_t flags = failsafe_active_ ? proto::STATUS_FAILSAFE : 0;
    if (moving()) flags |= proto::STATUS_MOVING;
    return flags;
}

uint16_t Controller::pulse_half_us(uint8_t finger) const {
    // Linear from the pulse at logical 0 to the pulse at logical 180, rounded half away from
    // the pulse at 0; the span may be negative (a mirrored servo).
    const uint16_t at_0 = pulse_at_0_[finger];
    const uint16_t at_180 = pulse_at_180_[finger];
    const uint32_t span = 2u * (at_180 >= at_0 ? at_180 - at_0 : at_0 - at_180);
    const uint16_t part = (uint16_t)((span * pos_[finger] + FULL_SCALE_MDEG / 2) / FULL_SCALE_MDEG);
    return (uint16_t)(at_180 >= at_0 ? 2u * at_0 + part : 2u * at_0 - part);
}

void Controller::snap_if_instant() {
    if (speed_dps_ != 0 || move_ms_ != 0) return;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) pos_[i] = mdeg(target_[i]);
}

void Controller::drive(uint8_t mask) {
    driven_ |= mask;
    failsafe_active_ = 0;
}

void Controller::start_move(uint16_t duration_ms, uint32_t now_ms) {
    // Every finger, named or not, starts from where it is now and reaches its target when
    // the duration is up: they all arrive together.
    for (uint8_t i = 0; i < proto::FINGERS; ++i) from_[i] = pos_[i];
    move_start_ms_ = now_ms;
    move_ms_ = duration_ms;
}

void Controller::fill_state(uint8_t type, uint8_t seq, Reply &out) {
    out.type = type;
    out.seq = seq;
    out.len = proto::STATE_LEN;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) out.payload[i] = target_[i];
    const uint8_t flags = status();
    out.payload[proto::FINGERS] = flags;
    out.payload[proto::FINGERS + 1] = (uint8_t)(proto::ALL_FINGERS & ~driven_);
    told_moving_ = flags & proto::STATUS_MOVING;
}

void Controller::hello(uint8_t seq, Reply &out) const {
    out.type = proto::HELLO;
    out.seq = seq;
    out.len = proto::HELLO_LEN;
    out.payload[0] = proto::VERSION;
    out.payload[1] = HAND_FW_MAJOR;
    out.payload[2] = HAND_FW_MINOR;
    out.payload[3] = HAND_FW_PATCH;
    out.payload[4] = proto::FINGERS;
    out.payload[5] = status();
}

void Controller::handle(const proto::Frame &frame, uint32_t now_ms, Reply &out) {
    const uint8_t *p = frame.payload;
    const uint8_t len = frame.len;
    const uint8_t seq = frame.seq;

    // Validate completely before changing anything: a NACKed frame changes nothing.
    switch (frame.type) {
    case proto::SET_ALL:
        if (len != proto::FINGERS) return nack(seq, proto::BAD_LENGTH, out);
        if (!angles_ok(p, len)) return nack(seq, proto::BAD_ANGLE, out);
        for (uint8_t i = 0; i < proto::FINGERS; ++i) target_[i] = p[i];
        drive(proto::ALL_FINGERS);
        move_ms_ = 0;
        break;
    case proto::SET_SOME:
    case proto::MOVE: {
        // SET_SOME: mask, angles. MOVE: duration (u16), mask, angles.
        const uint8_t head = frame.type == proto::MOVE ? MOVE_HEADER : SET_SOME_HEADER;
        if (len < head) return nack(seq, proto::BAD_LENGTH, out);
        const uint8_t mask = p[head - 1];
        if (!mask_ok(mask)) return nack(seq, proto::BAD_MASK, out);
        if (len != head + bits_set(mask)) return nack(seq, proto::BAD_LENGTH, out);
        if (!angles_ok(p + head, (uint8_t)(len - head))) return nack(seq, proto::BAD_ANGLE, out);
        uint8_t next = head;
        for (uint8_t i = 0; i < proto::FINGERS; ++i) {
            if (mask & (1u << i)) target_[i] = p[next++];
        }
        drive(mask);
        move_ms_ = 0;
        if (frame.type == proto::MOVE && u16_at(p) != 0) start_move(u16_at(p), now_ms);
        break;
    }
    case proto::HEARTBEAT:
    case proto::HELLO_REQUEST:
        if (len != 0) return nack(seq, proto::BAD_LENGTH, out);
        break;
    case proto::CONFIGURE:
        if (len != CONFIGURE_LEN) return nack(seq, proto::BAD_LENGTH, out);
        if (p[CONFIGURE_ACTION] > ACTION_SAFE_POSE ||
            !angles_ok(p + CONFIGURE_SAFE_POSE, proto::FINGERS)) {
            return nack(seq, proto::BAD_CONFIG, out);
        }
        timeout_ms_ = u16_at(p);
        action_ = p[CONFIGURE_ACTION];
        for (uint8_t i = 0; i < proto::FINGERS; ++i) safe_pose_[i] = p[CONFIGURE_SAFE_POSE + i];
        speed_dps_ = u16_at(p + CONFIGURE_SPEED);
        break;
    case proto::CALIBRATE: {
        if (len != CALIBRATE_LEN) return nack(seq, proto::BAD_LENGTH, out);
        if (!mask_ok(p[0])) return nack(seq, proto::BAD_MASK, out);
        const uint16_t at_0 = u16_at(p + CALIBRATE_PULSE_AT_0);
        const uint16_t at_180 = u16_at(p + CALIBRATE_PULSE_AT_180);
        if (!pulse_ok(at_0) || !pulse_ok(at_180)) return nack(seq, proto::BAD_PULSE, out);
        for (uint8_t i = 0; i < proto::FINGERS; ++i) {
            if (p[0] & (1u << i)) {
                pulse_at_0_[i] = at_0;
                pulse_at_180_[i] = at_180;
            }
        }
        break;
    }
    case proto::RELAX:
        if (len != RELAX_LEN) return nack(seq, proto::BAD_LENGTH, out);
        if (!mask_ok(p[0])) return nack(seq, proto::BAD_MASK, out);
        driven_ &= (uint8_t)~p[0];
        // A limp finger is taken to be at its target: nothing is left to move when it is
        // driven again, and it does not keep "moving" set.
        for (uint8_t i = 0; i < proto::FINGERS; ++i) {
            if (p[0] & (1u << i)) pos_[i] = from_[i] = mdeg(target_[i]);
        }
        break;
    default:
        return nack(seq, proto::UNKNOWN_TYPE, out);
    }

    // A valid frame: restart the failsafe clock and re-arm it.
    last_valid_ms_ = now_ms;
    fired_ = 0;
    snap_if_instant();
    if (frame.type == proto::HELLO_REQUEST) {
        hello(seq, out);
    } else {
        fill_state(proto::ACK, seq, out);
    }
}

bool Controller::tick(uint32_t now_ms, Reply &out) {
    bool fired = false;
    if (timeout_ms_ != 0 && !fired_ && (uint32_t)(now_ms - last_valid_ms_) >= timeout_ms_) {
        fired_ = 1;
        failsafe_active_ = 1;
        if (action_ == ACTION_SAFE_POSE) {
            // Only the driven fingers move: a relaxed finger stays limp.
            for (uint8_t i = 0; i < proto::FINGERS; ++i) {
                if (driven_ & (1u << i)) target_[i] = safe_pose_[i];
            }
            move_ms_ = 0;
        }
        fired = true;
    }

    uint32_t elapsed = (uint32_t)(now_ms - last_tick_ms_);
    last_tick_ms_ = now_ms;
    // A timed move puts every finger `fraction` of the way from where it started; otherwise
    // each one steps toward its target at the configured speed (at once without one).
    const bool timed = move_ms_ != 0;
    uint32_t fraction = 1ul << FRACTION_BITS;
    if (timed) {
        const uint32_t done = (uint32_t)(now_ms - move_start_ms_);
        if (done < move_ms_) {
            fraction = (done << FRACTION_BITS) / move_ms_;
        } else {
            move_ms_ = 0;  // arrived: from + whole span is exactly the target
        }
    }
    if (elapsed > MAX_STEP_MS) elapsed = MAX_STEP_MS;
    const uint32_t step = speed_dps_ ? (uint32_t)speed_dps_ * elapsed : FULL_SCALE_MDEG;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) {
        const uint32_t goal = mdeg(target_[i]);
        const uint32_t pos = pos_[i];
        if (timed) {
            pos_[i] = between(from_[i], goal, fraction);
        } else if (pos < goal) {
            pos_[i] = (goal - pos > step) ? pos + step : goal;  // deg/s == mdeg/ms
        } else if (pos > goal) {
            pos_[i] = (pos - goal > step) ? pos - step : goal;
        }
    }

    uint8_t report = 0;
    if (fired) {
        report = proto::FAILSAFE;
    } else if (told_moving_ && !moving()) {
        report = proto::ARRIVED;
    }
    if (report) fill_state(report, 0, out);
    return report != 0;
}

}  // namespace hand
