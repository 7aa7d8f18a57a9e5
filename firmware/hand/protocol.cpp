// Serial frames: see protocol.h. No AVR headers here on purpose (host tests build this file).
#include "protocol.h"

#include <string.h>

namespace proto {

uint8_t crc8_step(uint8_t crc, uint8_t byte) {
    crc ^= byte;
    for (uint8_t bit = 0; bit < 8; ++bit) {
        crc = (crc & 0x80) ? (uint8_t)((crc << 1) ^ 0x07) : (uint8_t)(crc << 1);
    }
    return crc;
}

uint8_t crc8(const uint8_t *data, uint8_t count) {
    uint8_t crc = 0;
    while (count--) crc = crc8_step(crc, *data++);
    return crc;
}

uint8_t encode(uint8_t type, uint8_t seq, const uint8_t *payload, uint8_t len, uint8_t *out) {
    if (len > MAX_PAYLOAD) return 0;
    out[0] = SYNC;
    out[1] = len;
    out[2] = type;
    out[3] = seq;
    for (uint8_t i = 0; i < len; ++i) out[4 + i] = payload[i];
    out[4 + len] = crc8(out + 1, (uint8_t)(3 + len));
    return (uint8_t)(OVERHEAD + len);
}

void Parser::drop(uint8_t n) {
    if (n >= count_) {
        count_ = 0;
        return;
    }
    count_ = (uint8_t)(count_ - n);
    memmove(buf_, buf_ + n, count_);
}

void Parser::push(uint8_t byte) {
    // next() leaves at most MAX_FRAME - 1 bytes behind; this guard only matters for a caller
    // that skipped it, and then the oldest byte is sacrificed rather than memory beyond buf_.
    if (count_ >= MAX_FRAME) drop(1);
    buf_[count_++] = byte;
}

void Parser::drop_head() {
    drop(1);
}

bool Parser::next(Frame &frame) {
    for (;;) {
        // Skip to the next sync byte.
        uint8_t skip = 0;
        while (skip < count_ && buf_[skip] != SYNC) ++skip;
        if (skip) drop(skip);
        if (count_ < 2) return false;  // nothing, or a sync byte without its LEN yet
        const uint8_t len = buf_[1];
        if (len > MAX_PAYLOAD) {
#ifdef HAND_PARSER_STATS
            ++bad_length;
#endif
            drop(1);  // bad length: resume right after this sync byte
            continue;
        }
        const uint8_t total = (uint8_t)(OVERHEAD + len);
        if (count_ < total) return false;  // wait for the rest
        if (crc8(buf_ + 1, (uint8_t)(3 + len)) != buf_[total - 1]) {
#ifdef HAND_PARSER_STATS
            ++bad_crc;
#endif
            drop(1);  // bad CRC: resume right after this sync byte
            continue;
        }
        frame.len = len;
        frame.type = buf_[2];
        frame.seq = buf_[3];
        memcpy(frame.payload, buf_ + 4, len);
        drop(total);
        return true;
    }
}

}  // namespace proto
