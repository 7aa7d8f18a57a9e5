// Serial frames (docs/serial-protocol.md): CRC-8, encoder and a resynchronising parser.
// Plain C++ with no AVR dependency, so the host test suite compiles the very same file.
#ifndef HAND_PROTOCOL_H
#define HAND_PROTOCOL_H

#include <stdint.h>

namespace proto {

const uint8_t SYNC = 0xA5;
const uint8_t MAX_PAYLOAD = 16;
const uint8_t OVERHEAD = 5;  // sync, LEN, TYPE, SEQ, CRC
const uint8_t MAX_FRAME = OVERHEAD + MAX_PAYLOAD;
const uint8_t VERSION = 2;
const uint8_t FINGERS = 5;
const uint8_t MAX_ANGLE = 180;
const uint8_t ALL_FINGERS = (1u << FINGERS) - 1;
// Pulse widths a CALIBRATE may set, in microseconds.
const uint16_t MIN_PULSE_US = 400;
const uint16_t MAX_PULSE_US = 2600;
// ACK, FAILSAFE and ARRIVED: five target angles, status flags, the mask of fingers without pulses.
const uint8_t STATE_LEN = FINGERS + 2;
const uint8_t HELLO_LEN = 6;
const uint8_t NACK_LEN = 1;  // the reason

enum Type {
    SET_ALL = 0x01,
    SET_SOME = 0x02,
    HEARTBEAT = 0x03,
    HELLO_REQUEST = 0x04,
    CONFIGURE = 0x05,
    CALIBRATE = 0x06,
    RELAX = 0x07,
    MOVE = 0x08,
    HELLO = 0x81,
    ACK = 0x82,
    NACK = 0x83,
    FAILSAFE = 0x84,
    ARRIVED = 0x85
};

enum NackReason {
    UNKNOWN_TYPE = 1,
    BAD_LENGTH = 2,
    BAD_ANGLE = 3,
    BAD_MASK = 4,
    BAD_CONFIG = 5,
    BAD_PULSE = 6
};

enum Status {
    STATUS_FAILSAFE = 0x01,
    STATUS_MOVING = 0x02
};

struct Frame {
    uint8_t type;
    uint8_t seq;
    uint8_t len;
    uint8_t payload[MAX_PAYLOAD];
};

// CRC-8/SMBUS: polynomial 0x07, initial value 0, no reflection, no final XOR.
uint8_t crc8_step(uint8_t crc, uint8_t byte);
uint8_t crc8(const uint8_t *data, uint8_t count);

// Writes the complete frame (sync to CRC) into out, which must hold MAX_FRAME bytes.
// Returns the number of bytes written, or 0 when len exceeds MAX_PAYLOAD.
uint8_t encode(uint8_t type, uint8_t seq, const uint8_t *payload, uint8_t len, uint8_t *out);

// Byte-at-a-time frame parser. After every push() call next() until it returns false.
// A sync byte followed by LEN > 16, or a complete frame with a bad CRC, is dropped and the
// scan restarts at the byte right after that sync byte, so a frame hidden in garbage is found.
// Only frames with a valid length and CRC ever come out of next().
class Parser {
public:
    Parser() : count_(0) {}
    void reset() { count_ = 0; }
    void push(uint8_t byte);
    bool next(Frame &frame);
    // True while the bytes of an incomplete frame are held back.
    bool pending() const { return count_ != 0; }
    // Gives up on the incomplete frame at the head (a stale one): its sync byte is dropped and
    // the following bytes are scanned again by the next call to next().
    void drop_head();

#ifdef HAND_PARSER_STATS
    // Host test builds only (the firmware has no use for them): frames dropped for a bad CRC
    // and sync bytes dropped for LEN > 16.
    unsigned long bad_crc = 0;
    unsigned long bad_length = 0;
#endif

private:
    void drop(uint8_t n);
    uint8_t buf_[MAX_FRAME];
    uint8_t count_;
};

}  // namespace proto

#endif
