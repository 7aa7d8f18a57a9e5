// Frame handling, failsafe and motion: see controller.h and docs/serial-protocol.md.
#include "controller.h"

#include "config.h"

namespace hand {

namespace {

const uint8_t ALL_FINGERS = (1u << proto::FINGERS) - 1;
const uint8_t CONFIGURE_LEN = 10;
const uint32_t MAX_STEP_MS = 1000;  // caps one motion step after a long pause

uint32_t mdeg(uint8_t angle) {
    return (uint32_t)angle * 1000u;
}

bool angles_ok(const uint8_t *angles, uint8_t count) {
    for (uint8_t i = 0; i < count; ++i) {
        if (angles[i] > proto::MAX_ANGLE) return false;
    }
    return true;
}

uint8_t bits_set(uint8_t v) {
    uint8_t n = 0;
    for (; v; v &= (uint8_t)(v - 1)) ++n;
    return n;
}

void nack(uint8_t seq, uint8_t reason, Reply &out) {
    out.type = proto::NACK;
    out.seq = seq;
    out.len = 1;
    out.payload[0] = reason;
}

}  // namespace

void Controller::begin(uint32_t now_ms) {
    for (uint8_t i = 0; i < proto::FINGERS; ++i) {
        target_[i] = HAND_DEFAULT_ANGLE;
        safe_pose_[i] = HAND_DEFAULT_SAFE_ANGLE;
        pos_[i] = mdeg(HAND_DEFAULT_ANGLE);
    }
    last_valid_ms_ = now_ms;
    last_tick_ms_ = now_ms;
    timeout_ms_ = 0;
    speed_dps_ = 0;
    action_ = 0;
    driven_ = 0;
    failsafe_active_ = 0;
    fired_ = 0;
}

uint8_t Controller::status() const {
    uint8_t flags = failsafe_active_ ? proto::STATUS_FAILSAFE : 0;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) {
        if (pos_[i] != mdeg(target_[i])) {
            flags |= proto::STATUS_MOVING;
            break;
        }
    }
    return flags;
}

void Controller::snap_if_instant() {
    if (speed_dps_ != 0) return;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) pos_[i] = mdeg(target_[i]);
}

void Controller::fill_angles(uint8_t type, uint8_t seq, Reply &out) const {
    out.type = type;
    out.seq = seq;
    out.len = proto::FINGERS + 1;
    for (uint8_t i = 0; i < proto::FINGERS; ++i) out.payload[i] = target_[i];
    out.payload[proto::FINGERS] = status();
}

void Controller::hello(uint8_t seq, Reply &out) const {
    out.type = proto::HELLO;
    out.seq = seq;
    out.len = 6;
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
        driven_ = ALL_FINGERS;
        failsafe_active_ = 0;
        break;
    case proto::SET_SOME: {
        if (len < 1) return nack(seq, proto::BAD_LENGTH, out);
        const uint8_t mask = p[0];
        if (mask == 0 || (mask & (uint8_t)~ALL_FINGERS)) return nack(seq, proto::BAD_MASK, out);
        if (len != 1 + bits_set(mask)) return nack(seq, proto::BAD_LENGTH, out);
        if (!angles_ok(p + 1, (uint8_t)(len - 1))) return nack(seq, proto::BAD_ANGLE, out);
        uint8_t next = 1;
        for (uint8_t i = 0; i < proto::FINGERS; ++i) {
            if (mask & (1u << i)) target_[i] = p[next++];
        }
        driven_ |= mask;
        failsafe_active_ = 0;
        break;
    }
    case proto::HEARTBEAT:
    case proto::HELLO_REQUEST:
        if (len != 0) return nack(seq, proto::BAD_LENGTH, out);
        break;
    case proto::CONFIGURE:
        if (len != CONFIGURE_LEN) return nack(seq, proto::BAD_LENGTH, out);
        if (p[2] > 1 || !angles_ok(p + 3, proto::FINGERS)) {
            return nack(seq, proto::BAD_CONFIG, out);
        }
        timeout_ms_ = (uint16_t)(p[0] | (p[1] << 8));
        action_ = p[2];
        for (uint8_t i = 0; i < proto::FINGERS; ++i) safe_pose_[i] = p[3 + i];
        speed_dps_ = (uint16_t)(p[8] | (p[9] << 8));
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
        fill_angles(proto::ACK, seq, out);
    }
}

bool Controller::tick(uint32_t now_ms, Reply &out) {
    bool fired = false;
    if (timeout_ms_ != 0 && !fired_ && (uint32_t)(now_ms - last_valid_ms_) >= timeout_ms_) {
        fired_ = 1;
        failsafe_active_ = 1;
        if (action_ == 1) {
            for (uint8_t i = 0; i < proto::FINGERS; ++i) target_[i] = safe_pose_[i];
            driven_ = ALL_FINGERS;
        }
        fired = true;
    }

    uint32_t elapsed = (uint32_t)(now_ms - last_tick_ms_);
    last_tick_ms_ = now_ms;
    if (speed_dps_ == 0) {
        snap_if_instant();
    } else if (elapsed != 0) {
        if (elapsed > MAX_STEP_MS) elapsed = MAX_STEP_MS;
        const uint32_t step = (uint32_t)speed_dps_ * elapsed;  // deg/s == mdeg/ms
        for (uint8_t i = 0; i < proto::FINGERS; ++i) {
            const uint32_t goal = mdeg(target_[i]);
            uint32_t pos = pos_[i];
            if (pos < goal) {
                pos = (goal - pos > step) ? pos + step : goal;
            } else if (pos > goal) {
                pos = (pos - goal > step) ? pos - step : goal;
            }
            pos_[i] = pos;
        }
    }

    if (fired) fill_angles(proto::FAILSAFE, 0, out);
    return fired;
}

}  // namespace hand
