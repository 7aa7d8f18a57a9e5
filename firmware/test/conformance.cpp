// Host conformance tests: the firmware's own protocol.cpp and controller.cpp, compiled with g++,
// against every entry of protocol/vectors.json (via the generated vectors.h) plus behaviour the
// vectors cannot express (failsafe timing, motion speed, timed moves, relax, the 50 ms
// stale-frame rule).
#include <string.h>

#include <vector>

#include "check.h"
#include "config.h"
#include "controller.h"
#include "protocol.h"
#include "vectors.h"

namespace {

typedef std::vector<uint8_t> Bytes;

Bytes bytes_of(const vectors::Bytes &b) {
    return Bytes(b.data, b.data + b.len);
}

Bytes wire(const proto::Frame &f) {
    uint8_t out[proto::MAX_FRAME];
    const uint8_t n = proto::encode(f.type, f.seq, f.payload, f.len, out);
    return Bytes(out, out + n);
}

Bytes wire(const hand::Reply &r) {
    uint8_t out[proto::MAX_FRAME];
    const uint8_t n = proto::encode(r.type, r.seq, r.payload, r.len, out);
    return Bytes(out, out + n);
}

// Feeds bytes one at a time, as the firmware loop does, collecting every frame.
std::vector<Bytes> parse(proto::Parser &parser, const Bytes &input) {
    std::vector<Bytes> frames;
    proto::Frame f;
    for (uint8_t b : input) {
        parser.push(b);
        while (parser.next(f)) frames.push_back(wire(f));
    }
    return frames;
}

// What the sketch does after 50 ms of silence; counts the sync bytes it drops.
std::vector<Bytes> expire(proto::Parser &parser, long *drops = nullptr) {
    std::vector<Bytes> frames;
    proto::Frame f;
    while (parser.pending()) {
        parser.drop_head();
        if (drops) ++*drops;
        while (parser.next(f)) frames.push_back(wire(f));
    }
    return frames;
}

proto::Frame frame(uint8_t type, uint8_t seq, const Bytes &payload) {
    proto::Frame f;
    f.type = type;
    f.seq = seq;
    f.len = (uint8_t)payload.size();
    if (!payload.empty()) memcpy(f.payload, payload.data(), payload.size());
    return f;
}

hand::Reply send(hand::Controller &c, const proto::Frame &f, uint32_t now) {
    hand::Reply r;
    memset(&r, 0xEE, sizeof r);
    c.handle(f, now, r);
    return r;
}

Bytes configure_payload(uint16_t timeout, uint8_t action, const uint8_t pose[5], uint16_t speed) {
    Bytes p;
    p.push_back((uint8_t)timeout);
    p.push_back((uint8_t)(timeout >> 8));
    p.push_back(action);
    for (int i = 0; i < 5; ++i) p.push_back(pose[i]);
    p.push_back((uint8_t)speed);
    p.push_back((uint8_t)(speed >> 8));
    return p;
}

void test_crc_vectors() {
    check_context = "crc";
    CHECK_EQ(proto::crc8((const uint8_t *)"123456789", 9), 0xF4);  // the catalogue check value
    for (size_t i = 0; i < vectors::crc_count; ++i) {
        const vectors::CrcCase &v = vectors::crc[i];
        CHECK_EQ(proto::crc8(v.data.data, (uint8_t)v.data.len), v.crc);
    }
}

void test_frame_vectors() {
    for (size_t i = 0; i < vectors::frames_count; ++i) {
        const vectors::FrameCase &v = vectors::frames[i];
        check_context = v.name;
        const Bytes expected = bytes_of(v.wire);
        // encode
        uint8_t out[proto::MAX_FRAME];
        const uint8_t n = proto::encode((uint8_t)v.type, (uint8_t)v.seq, v.payload.data,
                                        (uint8_t)v.payload.len, out);
        CHECK(Bytes(out, out + n) == expected);
        // decode
        proto::Parser parser;
        proto::Frame f;
        size_t got = 0;
        for (uint8_t b : expected) {
            parser.push(b);
            while (parser.next(f)) {
                ++got;
                CHECK_EQ(f.type, v.type);
                CHECK_EQ(f.seq, v.seq);
                CHECK(Bytes(f.payload, f.payload + f.len) == bytes_of(v.payload));
            }
        }
        CHECK_EQ(got, 1);
        CHECK(!parser.pending());
    }
}

void test_request_vectors() {
    for (size_t i = 0; i < vectors::requests_count; ++i) {
        const vectors::RequestCase &v = vectors::requests[i];
        check_context = v.name;
        hand::Controller c;
        c.begin(0);
        proto::Parser parser;
        proto::Frame f;
        size_t got = 0;
        for (size_t k = 0; k < v.wire.len; ++k) {
            parser.push(v.wire.data[k]);
            while (parser.next(f)) {
                ++got;
                const hand::Reply r = send(c, f, 1);
                CHECK(wire(r) == bytes_of(v.reply));
                if (v.apply) {
                    CHECK(r.type == proto::ACK || r.type == proto::HELLO);
                    CHECK_EQ(r.type == proto::HELLO, f.type == proto::HELLO_REQUEST);
                } else {
                    CHECK_EQ(r.type, proto::NACK);
                    CHECK_EQ(r.len, 1);
                    CHECK_EQ(r.payload[0], v.nack_reason);
                    // A NACKed frame changes nothing.
                    for (int k2 = 0; k2 < 5; ++k2) {
                        CHECK_EQ(c.target(k2), 90);
                        CHECK_EQ(c.pulse_at_0_us(k2), 544);
                        CHECK_EQ(c.pulse_at_180_us(k2), 2400);
                    }
                    CHECK_EQ(c.driven_mask(), 0);
                    CHECK_EQ(c.failsafe_timeout_ms(), 0);
                    CHECK_EQ(c.speed_dps(), 0);
                    CHECK_EQ(c.status(), 0);
                }
                if (v.has_angles) {
                    for (int k2 = 0; k2 < 5; ++k2) CHECK_EQ(c.target(k2), v.angles[k2]);
                }
                if (v.mask >= 0) CHECK_EQ(c.driven_mask(), v.mask);
                if (v.relaxed >= 0) CHECK_EQ(proto::ALL_FINGERS & ~c.driven_mask(), v.relaxed);
                if (v.apply && f.type == proto::SET_ALL) CHECK_EQ(c.driven_mask(), 0x1F);
            }
        }
        CHECK_EQ(got, 1);
    }
}

void test_pulse_vectors() {
    for (size_t i = 0; i < vectors::pulses_count; ++i) {
        const vectors::PulseCase &v = vectors::pulses[i];
        check_context = "pulses";
        hand::Controller c;
        c.begin(0);
        const Bytes calibrate = {0x1F, (uint8_t)v.pulse_at_0_us, (uint8_t)(v.pulse_at_0_us >> 8),
                                 (uint8_t)v.pulse_at_180_us, (uint8_t)(v.pulse_at_180_us >> 8)};
        CHECK_EQ(send(c, frame(proto::CALIBRATE, 1, calibrate), 0).type, proto::ACK);
        const uint8_t a = (uint8_t)v.angle;
        CHECK_EQ(send(c, frame(proto::SET_ALL, 2, Bytes{a, a, a, a, a}), 0).type, proto::ACK);
        for (uint8_t k = 0; k < 5; ++k) CHECK_EQ(c.pulse_half_us(k), v.half_us);
    }
}

void test_stream_vectors() {
    for (size_t i = 0; i < vectors::streams_count; ++i) {
        const vectors::StreamCase &v = vectors::streams[i];
        check_context = v.name;
        proto::Parser parser;
        const std::vector<Bytes> got = parse(parser, bytes_of(v.input));
        CHECK_EQ(got.size(), v.frame_count);
        for (size_t k = 0; k < got.size() && k < v.frame_count; ++k) {
            CHECK(got[k] == bytes_of(v.frames[k]));
        }
        CHECK_EQ(parser.bad_crc, v.bad_crc);
        CHECK_EQ(parser.bad_length, v.bad_length);
    }
}

// The shared vectors of the 50 ms rule: feed each chunk, then let its silence pass as the
// sketch's loop does (HAND_STALE_FRAME_MS).
void test_stale_vectors() {
    for (size_t i = 0; i < vectors::stale_count; ++i) {
        const vectors::StaleCase &v = vectors::stale[i];
        check_context = v.name;
        proto::Parser parser;
        std::vector<Bytes> got;
        long drops = 0;
        for (size_t k = 0; k < v.chunk_count; ++k) {
            for (const Bytes &f : parse(parser, bytes_of(v.chunks[k].input))) got.push_back(f);
            if (v.chunks[k].silence_ms >= HAND_STALE_FRAME_MS) {
                for (const Bytes &f : expire(parser, &drops)) got.push_back(f);
            }
        }
        CHECK_EQ(got.size(), v.frame_count);
        for (size_t k = 0; k < got.size() && k < v.frame_count; ++k) {
            CHECK(got[k] == bytes_of(v.frames[k]));
        }
        CHECK_EQ(drops, v.stale_drops);
        CHECK_EQ(parser.pending(), v.pending != 0);
    }
}

void test_stale_partial_frame() {
    check_context = "stale";
    const Bytes hb = {0xA5, 0x00, 0x03, 0x02, 0x31};  // HEARTBEAT seq 2 (a stream vector)
    // A truncated SET_ALL then silence: dropped, and the parser is clean again.
    proto::Parser parser;
    CHECK(parse(parser, Bytes{0xA5, 0x05, 0x01, 0x01, 0x0A}).empty());
    CHECK(parser.pending());
    CHECK(expire(parser).empty());
    CHECK(!parser.pending());
    std::vector<Bytes> got = parse(parser, hb);
    CHECK_EQ(got.size(), 1);
    // A false sync claiming LEN 16 hides a complete frame: after the silence the scan resumes
    // right after the stale sync byte and finds it.
    Bytes hidden = {0xA5, 0x10};
    hidden.insert(hidden.end(), hb.begin(), hb.end());
    CHECK(parse(parser, hidden).empty());
    got = expire(parser);
    CHECK_EQ(got.size(), 1);
    if (!got.empty()) CHECK(got[0] == hb);
    CHECK(!parser.pending());
}

void test_behaviour() {
    const uint8_t open_hand[5] = {180, 180, 180, 180, 180};
    const uint8_t pose[5] = {10, 20, 30, 40, 50};

    check_context = "boot";
    hand::Controller c;
    c.begin(1000);
    hand::Reply r;
    c.hello(0, r);
    CHECK(wire(r) == (Bytes{0xA5, 0x06, 0x81, 0x00, 0x02, 0x02, 0x00, 0x00, 0x05, 0x00,
                            proto::crc8(Bytes{0x06, 0x81, 0x00, 0x02, 0x02, 0x00, 0x00, 0x05,
                                              0x00}.data(), 9)}));
    CHECK_EQ(c.driven_mask(), 0);
    // failsafe off at power-on: nothing fires however long we wait
    CHECK(!c.tick(1000 + 600000, r));

    check_context = "failsafe hold";
    c.begin(0);
    r = send(c, frame(proto::SET_ALL, 1, Bytes{1, 2, 3, 4, 5}), 0);
    r = send(c, frame(proto::CONFIGURE, 2, configure_payload(100, 0, open_hand, 0)), 10);
    CHECK_EQ(r.type, proto::ACK);
    CHECK(!c.tick(109, r));
    CHECK(c.tick(110, r));  // 100 ms after the last valid frame
    CHECK_EQ(r.type, proto::FAILSAFE);
    CHECK_EQ(r.seq, 0);
    CHECK(wire(r) == wire(frame(proto::FAILSAFE, 0, Bytes{1, 2, 3, 4, 5, 1, 0})));
    CHECK(!c.tick(500, r));  // fires once per silence
    r = send(c, frame(proto::HEARTBEAT, 3, Bytes{}), 600);
    CHECK_EQ(r.payload[5], proto::STATUS_FAILSAFE);  // heartbeat re-arms, flag stays
    CHECK(c.tick(700, r));                         // and it fires again
    r = send(c, frame(proto::SET_SOME, 4, Bytes{0x01, 90}), 800);
    CHECK_EQ(r.payload[5], 0);  // cleared by SET_SOME

    check_context = "failsafe safe pose";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(250, 1, pose, 0)), 0);
    r = send(c, frame(proto::SET_SOME, 2, Bytes{0x13, 0, 0, 0}), 0);
    CHECK_EQ(c.driven_mask(), 0x13);
    CHECK(c.tick(250, r));
    // Only the driven fingers go to the safe pose; the others stay limp where they were.
    CHECK(wire(r) == wire(frame(proto::FAILSAFE, 0, Bytes{10, 20, 90, 90, 50, 1, 0x0C})));
    CHECK_EQ(c.driven_mask(), 0x13);
    CHECK_EQ(c.position_mdeg(4), 50000);
    r = send(c, frame(proto::SET_ALL, 3, Bytes{90, 90, 90, 90, 90}), 300);
    CHECK_EQ(r.payload[5], 0);

    check_context = "failsafe never drives a limp finger";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(100, 1, pose, 0)), 0);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{0, 0, 0, 0, 0}), 0);
    r = send(c, frame(proto::RELAX, 3, Bytes{0x1F}), 0);
    CHECK(c.tick(100, r));
    CHECK(wire(r) == wire(frame(proto::FAILSAFE, 0, Bytes{0, 0, 0, 0, 0, 1, 0x1F})));
    CHECK_EQ(c.driven_mask(), 0);

    check_context = "nack keeps failsafe clock";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(100, 0, open_hand, 0)), 0);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{181, 0, 0, 0, 0}), 90);
    CHECK_EQ(r.type, proto::NACK);
    CHECK(c.tick(100, r));  // the NACKed frame did not count as a valid frame

    check_context = "speed";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(0, 0, open_hand, 90)), 0);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{180, 90, 0, 90, 90}), 0);
    CHECK_EQ(r.payload[5], proto::STATUS_MOVING);
    CHECK_EQ(c.position_mdeg(0), 90000);  // sweeps from the power-on 90 degrees
    for (uint32_t t = 1; t <= 500; ++t) c.tick(t, r);
    CHECK_EQ(c.position_mdeg(0), 135000);  // 90 deg/s for 0.5 s
    CHECK_EQ(c.position_mdeg(2), 45000);
    CHECK_EQ(c.position_mdeg(1), 90000);
    CHECK_EQ(c.status(), proto::STATUS_MOVING);
    c.tick(1000, r);
    CHECK_EQ(c.position_mdeg(0), 180000);
    CHECK_EQ(c.position_mdeg(2), 0);
    CHECK_EQ(c.status(), 0);
    r = send(c, frame(proto::HEARTBEAT, 3, Bytes{}), 1001);
    CHECK_EQ(r.payload[5], 0);

    check_context = "speed zero moves at once";
    c.begin(0);
    r = send(c, frame(proto::SET_SOME, 1, Bytes{0x12, 0, 180}), 0);
    CHECK_EQ(r.payload[5], 0);
    CHECK_EQ(c.position_mdeg(1), 0);
    CHECK_EQ(c.position_mdeg(4), 180000);
    CHECK_EQ(c.driven_mask(), 0x12);

    check_context = "relax";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(0, 0, open_hand, 90)), 0);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{0, 0, 0, 0, 0}), 0);
    CHECK_EQ(r.payload[6], 0);
    c.tick(500, r);  // half way down from 90
    r = send(c, frame(proto::RELAX, 3, Bytes{0x11}), 500);
    CHECK_EQ(r.type, proto::ACK);
    CHECK(r.payload[5] & proto::STATUS_MOVING);  // the other three are still on their way
    CHECK_EQ(r.payload[6], 0x11);
    CHECK_EQ(c.driven_mask(), 0x0E);
    CHECK_EQ(c.position_mdeg(0), 0);  // taken to be at its target
    c.tick(1000, r);
    CHECK_EQ(r.type, proto::ARRIVED);
    r = send(c, frame(proto::SET_SOME, 4, Bytes{0x01, 0}), 1001);  // same angle: driven again
    CHECK_EQ(c.driven_mask(), 0x0F);
    CHECK_EQ(r.payload[5], 0);
    CHECK_EQ(r.payload[6], 0x10);

    check_context = "calibration";
    c.begin(0);
    r = send(c, frame(proto::CALIBRATE, 1, Bytes{0x01, 0xE6, 0x08, 0xD2, 0x02}), 0);  // 2278, 722
    CHECK_EQ(r.type, proto::ACK);
    CHECK_EQ(c.pulse_at_0_us(0), 2278);
    CHECK_EQ(c.pulse_at_180_us(0), 722);
    CHECK_EQ(c.pulse_at_0_us(1), 544);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{90, 90, 0, 180, 90}), 0);
    CHECK_EQ(c.pulse_half_us(0), 3000);  // 1500 us, the middle of a mirrored range
    CHECK_EQ(c.pulse_half_us(1), 2944);  // 1472 us
    CHECK_EQ(c.pulse_half_us(2), 1088);  // 544 us
    CHECK_EQ(c.pulse_half_us(3), 4800);  // 2400 us
    r = send(c, frame(proto::CALIBRATE, 3, Bytes{0x02, 0x8F, 0x01, 0x60, 0x09}), 0);  // 399
    CHECK_EQ(r.type, proto::NACK);
    CHECK_EQ(r.payload[0], proto::BAD_PULSE);
    CHECK_EQ(c.pulse_at_0_us(1), 544);

    check_context = "timed move";
    c.begin(0);
    r = send(c, frame(proto::SET_ALL, 1, Bytes{180, 180, 90, 0, 100}), 0);
    // index 180 -> 0, middle 180 -> 90, ring 90 -> 0, pinky 0 -> 180; thumb stays at 100.
    const Bytes move_payload = {0x20, 0x03, 0x0F, 0, 90, 0, 180};  // 800 ms
    r = send(c, frame(proto::MOVE, 2, move_payload), 1000);
    CHECK_EQ(r.type, proto::ACK);
    CHECK_EQ(r.payload[5], proto::STATUS_MOVING);
    CHECK_EQ(c.driven_mask(), 0x1F);
    uint32_t arrived_at = 0;
    int arrivals = 0;
    for (uint32_t t = 1001; t <= 2000; ++t) {
        if (c.tick(t, r)) {
            CHECK_EQ(r.type, proto::ARRIVED);
            CHECK_EQ(r.seq, 0);
            CHECK_EQ(r.payload[5], 0);
            ++arrivals;
            arrived_at = t;
        }
        if (t == 1400) {  // half way, every finger half way
            CHECK_EQ(c.position_mdeg(0), 90000);
            CHECK_EQ(c.position_mdeg(1), 135000);
            CHECK_EQ(c.position_mdeg(2), 45000);
            CHECK_EQ(c.position_mdeg(3), 90000);
            CHECK_EQ(c.position_mdeg(4), 100000);
        }
        if (t == 1799) {  // none is there a millisecond early
            CHECK(c.position_mdeg(0) > 0);
            CHECK(c.position_mdeg(1) > 90000);
            CHECK(c.position_mdeg(2) > 0);
            CHECK(c.position_mdeg(3) < 180000);
        }
    }
    CHECK_EQ(arrivals, 1);
    CHECK_EQ(arrived_at, 1800);
    CHECK_EQ(c.position_mdeg(3), 180000);

    check_context = "timed move from mid-way";
    c.begin(0);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(0, 0, open_hand, 10)), 0);
    r = send(c, frame(proto::SET_ALL, 2, Bytes{0, 90, 90, 90, 90}), 0);
    c.tick(1000, r);  // index at 80, still moving at 10 deg/s
    CHECK_EQ(c.position_mdeg(0), 80000);
    r = send(c, frame(proto::MOVE, 3, Bytes{0xC8, 0x00, 0x02, 180}), 1000);  // middle, 200 ms
    c.tick(1100, r);
    CHECK_EQ(c.position_mdeg(0), 40000);  // index too now arrives with the move
    CHECK_EQ(c.position_mdeg(1), 135000);
    CHECK(c.tick(1200, r));
    CHECK_EQ(r.type, proto::ARRIVED);
    CHECK_EQ(c.position_mdeg(0), 0);

    check_context = "move of zero duration is a set";
    c.begin(0);
    r = send(c, frame(proto::MOVE, 1, Bytes{0x00, 0x00, 0x01, 5}), 0);
    CHECK_EQ(r.payload[5], 0);
    CHECK_EQ(c.position_mdeg(0), 5000);
    CHECK(!c.tick(1, r));

    check_context = "a set ends a timed move";
    c.begin(0);
    r = send(c, frame(proto::SET_ALL, 1, Bytes{0, 0, 0, 0, 0}), 0);
    r = send(c, frame(proto::MOVE, 2, Bytes{0xE8, 0x03, 0x1F, 180, 180, 180, 180, 180}), 0);
    c.tick(500, r);
    r = send(c, frame(proto::SET_SOME, 3, Bytes{0x01, 10}), 500);  // speed 0: all at once
    CHECK_EQ(r.payload[5], 0);
    CHECK_EQ(c.position_mdeg(0), 10000);
    CHECK_EQ(c.position_mdeg(4), 180000);
    CHECK(!c.tick(501, r));  // the host was told in the ACK: no ARRIVED

    check_context = "clock wrap";
    c.begin(0xFFFFFF00u);
    r = send(c, frame(proto::CONFIGURE, 1, configure_payload(0x200, 0, open_hand, 0)),
             0xFFFFFF00u);
    CHECK(!c.tick(0x000000FFu, r));
    CHECK(c.tick(0x00000100u, r));
}

}  // namespace

int main() {
    test_crc_vectors();
    test_frame_vectors();
    test_request_vectors();
    test_pulse_vectors();
    test_stream_vectors();
    test_stale_vectors();
    test_stale_partial_frame();
    test_behaviour();
    printf("vectors: %zu crc, %zu frames, %zu requests, %zu pulses, %zu streams, %zu stale\n",
           vectors::crc_count, vectors::frames_count, vectors::requests_count,
           vectors::pulses_count, vectors::streams_count, vectors::stale_count);
    return check_report("conformance");
}
