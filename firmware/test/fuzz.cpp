// Fuzz / property tests for the firmware's frame parser and controller (host build with
// AddressSanitizer and UBSan, so any out-of-bounds access aborts the run).
//
//   fuzz [SEED [ITERATIONS]]
//
// Properties:
//  1. The parser agrees, frame for frame and drop for drop, with a separate, deliberately
//     naive scanner written from docs/serial-protocol.md, on random, sync-heavy and mutated
//     streams with valid frames spliced in. Hence it never emits a frame with a bad CRC or
//     LEN (checked directly as well).
//  2. The stale-frame path (drop_head + rescan, what the sketch does after 50 ms of silence)
//     agrees with the naive scanner's end-of-stream rule and always empties the parser.
//  3. Valid frames following garbage without a sync byte are all recovered, in order, even
//     when the parser was left in any state by earlier garbage and then went stale.
//  4. The controller, fed random frames with a good CRC and random time steps, never reports
//     an angle above 180, answers every frame with one well-formed reply, changes nothing on
//     a NACK, keeps positions within 0..180 degrees moving toward the targets and pulses within
//     the calibrated range, and never starts driving a finger as time passes.
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "check.h"
#include "controller.h"
#include "protocol.h"

namespace {

typedef std::vector<uint8_t> Bytes;

// xorshift64*: small, seeded, reproducible.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint32_t next() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return (uint32_t)((s * 0x2545F4914F6CDD1Dull) >> 32);
    }
    uint32_t below(uint32_t n) { return n ? next() % n : 0; }
    uint8_t byte() { return (uint8_t)next(); }
    bool chance(uint32_t percent) { return below(100) < percent; }
};

// --- the naive reference: straight from the protocol text, whole stream at once -------------

uint8_t ref_crc(const uint8_t *p, size_t n) {
    uint8_t crc = 0;
    for (size_t i = 0; i < n; ++i) {
        crc ^= p[i];
        for (int b = 0; b < 8; ++b) crc = (uint8_t)((crc & 0x80) ? (crc << 1) ^ 0x07 : crc << 1);
    }
    return crc;
}

struct RefResult {
    std::vector<Bytes> frames;
    long bad_crc = 0;
    long bad_length = 0;
};

// flush_stale: the stream ends in silence, so an incomplete frame at the end is dropped like
// any other invalid one (its sync byte) and the scan continues after it.
RefResult reference(const Bytes &s, bool flush_stale) {
    RefResult r;
    size_t i = 0;
    while (i < s.size()) {
        if (s[i] != 0xA5) {
            ++i;
            continue;
        }
        if (i + 1 >= s.size()) {
            if (!flush_stale) break;
            ++i;
            continue;
        }
        const size_t len = s[i + 1];
        if (len > 16) {
            ++r.bad_length;
            ++i;
            continue;
        }
        if (i + 5 + len > s.size()) {
            if (!flush_stale) break;
            ++i;
            continue;
        }
        if (ref_crc(&s[i + 1], 3 + len) != s[i + 4 + len]) {
            ++r.bad_crc;
            ++i;
            continue;
        }
        r.frames.push_back(Bytes(s.begin() + i, s.begin() + i + 5 + len));
        i += 5 + len;
    }
    return r;
}

// --- the parser under test, driven the way the sketch drives it --------------------------

Bytes wire(const proto::Frame &f) {
    uint8_t out[proto::MAX_FRAME];
    const uint8_t n = proto::encode(f.type, f.seq, f.payload, f.len, out);
    return Bytes(out, out + n);
}

void collect(proto::Parser &p, std::vector<Bytes> &out) {
    proto::Frame f;
    memset(&f, 0xCC, sizeof f);
    while (p.next(f)) {
        // Property 1, directly: only valid frames come out.
        CHECK(f.len <= proto::MAX_PAYLOAD);
        out.push_back(wire(f));
    }
}

std::vector<Bytes> feed(proto::Parser &p, const Bytes &s) {
    std::vector<Bytes> out;
    for (uint8_t b : s) {
        p.push(b);
        collect(p, out);
    }
    return out;
}

std::vector<Bytes> expire(proto::Parser &p) {
    std::vector<Bytes> out;
    int guard = 0;
    while (p.pending() && guard++ < 64) {
        p.drop_head();
        collect(p, out);
    }
    CHECK(!p.pending());
    return out;
}

// --- stream generators ---------------------------------------------------------------------

Bytes random_frame(Rng &rng) {
    uint8_t payload[proto::MAX_PAYLOAD];
    const uint8_t len = (uint8_t)rng.below(proto::MAX_PAYLOAD + 1);
    for (uint8_t i = 0; i < len; ++i) payload[i] = rng.chance(10) ? 0xA5 : rng.byte();
    uint8_t out[proto::MAX_FRAME];
    const uint8_t n = proto::encode(rng.chance(80) ? (uint8_t)(1 + rng.below(5)) : rng.byte(),
                                    rng.byte(), payload, len, out);
    return Bytes(out, out + n);
}

Bytes garbage(Rng &rng, size_t n, bool allow_sync) {
    Bytes g;
    for (size_t i = 0; i < n; ++i) {
        uint8_t b = (allow_sync && rng.chance(15)) ? 0xA5 : rng.byte();
        if (!allow_sync && b == 0xA5) b = 0x5A;
        g.push_back(b);
    }
    return g;
}

void mutate(Rng &rng, Bytes &s) {
    const uint32_t edits = 1 + rng.below(4);
    for (uint32_t e = 0; e < edits && !s.empty(); ++e) {
        const size_t at = rng.below((uint32_t)s.size());
        switch (rng.below(5)) {
        case 0: s[at] ^= (uint8_t)(1u << rng.below(8)); break;           // bit flip
        case 1: s.erase(s.begin() + at); break;                          // lost byte
        case 2: s.insert(s.begin() + at, rng.byte()); break;             // extra byte
        case 3: s[at] = 0xA5; break;                                     // false sync
        default: if (at + 1 < s.size()) s[at + 1] = rng.byte(); break;   // LEN / anything
        }
    }
}

Bytes random_stream(Rng &rng) {
    Bytes s;
    const uint32_t pieces = 1 + rng.below(12);
    for (uint32_t i = 0; i < pieces; ++i) {
        Bytes piece;
        switch (rng.below(5)) {
        case 0: piece = garbage(rng, rng.below(40), true); break;
        case 1: piece = garbage(rng, rng.below(40), false); break;
        case 2: piece = random_frame(rng); break;
        case 3:
            piece = random_frame(rng);
            mutate(rng, piece);
            break;
        default: {
            piece = random_frame(rng);  // truncated frame
            piece.resize(rng.below((uint32_t)piece.size()));
            break;
        }
        }
        s.insert(s.end(), piece.begin(), piece.end());
    }
    if (rng.chance(30)) mutate(rng, s);
    return s;
}

// --- properties -------------------------------------------------------------------------------

void property_matches_reference(Rng &rng, int iterations) {
    check_context = "matches reference";
    for (int it = 0; it < iterations; ++it) {
        const Bytes s = random_stream(rng);
        proto::Parser p;
        const std::vector<Bytes> got = feed(p, s);
        const RefResult want = reference(s, false);
        CHECK(got == want.frames);
        CHECK_EQ(p.bad_crc, want.bad_crc);
        CHECK_EQ(p.bad_length, want.bad_length);
        CHECK(p.pending() || true);
        // Property 2: silence at the end.
        std::vector<Bytes> all = got;
        const std::vector<Bytes> late = expire(p);
        all.insert(all.end(), late.begin(), late.end());
        const RefResult flushed = reference(s, true);
        CHECK(all == flushed.frames);
        if (check_failures) {
            fprintf(stderr, "stream (%zu bytes):", s.size());
            for (uint8_t b : s) fprintf(stderr, " %02x", b);
            fprintf(stderr, "\n");
            return;
        }
    }
}

void property_recovers_after_garbage(Rng &rng, int iterations) {
    check_context = "recovers after garbage";
    for (int it = 0; it < iterations; ++it) {
        proto::Parser p;
        // Any state: feed arbitrary junk, then let it go stale.
        feed(p, random_stream(rng));
        expire(p);
        // Garbage without a sync byte interleaved with valid frames: all of them come out.
        std::vector<Bytes> sent;
        Bytes s;
        const uint32_t frames = 1 + rng.below(6);
        for (uint32_t k = 0; k < frames; ++k) {
            const Bytes g = garbage(rng, rng.below(30), false);
            s.insert(s.end(), g.begin(), g.end());
            const Bytes f = random_frame(rng);
            s.insert(s.end(), f.begin(), f.end());
            sent.push_back(f);
        }
        const std::vector<Bytes> got = feed(p, s);
        CHECK(got == sent);
        CHECK(!p.pending());
        if (check_failures) return;
    }
}

void property_push_without_next_is_bounded(Rng &rng, int iterations) {
    // A caller that forgets next() must not make the parser write past its buffer (ASan).
    check_context = "push without next";
    for (int it = 0; it < iterations; ++it) {
        proto::Parser p;
        const Bytes s = random_stream(rng);
        for (uint8_t b : s) p.push(b);
        std::vector<Bytes> out;
        collect(p, out);
        for (const Bytes &f : out) CHECK(f.size() <= proto::MAX_FRAME);
    }
}

struct Snapshot {
    uint8_t targets[5];
    uint16_t pulses[10];
    uint8_t driven;
    uint16_t timeout;
    uint16_t speed;
    uint8_t status;
    bool operator==(const Snapshot &o) const { return memcmp(this, &o, sizeof *this) == 0; }
};

Snapshot snapshot(const hand::Controller &c) {
    Snapshot s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 5; ++i) {
        s.targets[i] = c.target((uint8_t)i);
        s.pulses[2 * i] = c.pulse_at_0_us((uint8_t)i);
        s.pulses[2 * i + 1] = c.pulse_at_180_us((uint8_t)i);
    }
    s.driven = c.driven_mask();
    s.timeout = c.failsafe_timeout_ms();
    s.speed = c.speed_dps();
    s.status = c.status();
    return s;
}

void property_controller(Rng &rng, int iterations) {
    check_context = "controller";
    for (int it = 0; it < iterations / 10 + 1; ++it) {
        hand::Controller c;
        uint32_t now = rng.next();
        c.begin(now);
        uint32_t prev_pos[5];
        for (int i = 0; i < 5; ++i) prev_pos[i] = c.position_mdeg((uint8_t)i);
        for (int step = 0; step < 200; ++step) {
            if (rng.chance(60)) {
                proto::Frame f;
                f.type = rng.chance(85) ? (uint8_t)(1 + rng.below(8)) : rng.byte();
                f.seq = rng.byte();
                f.len = (uint8_t)(rng.chance(70) ? rng.below(11) : rng.below(17));
                for (int i = 0; i < proto::MAX_PAYLOAD; ++i) {
                    f.payload[i] = rng.chance(70) ? (uint8_t)rng.below(200) : rng.byte();
                }
                if ((f.type == proto::SET_SOME || f.type == proto::MOVE) && rng.chance(60)) {
                    const uint8_t head = f.type == proto::MOVE ? 3 : 1;
                    f.payload[head - 1] = (uint8_t)(1 + rng.below(31));
                    uint8_t n = 0;
                    for (int b = 0; b < 5; ++b) n += (f.payload[head - 1] >> b) & 1;
                    f.len = (uint8_t)(head + n);
                    if (head == 3) f.payload[1] = (uint8_t)rng.below(4);  // up to ~1 s
                }
                if ((f.type == proto::RELAX || f.type == proto::CALIBRATE) && rng.chance(60)) {
                    f.payload[0] = (uint8_t)(1 + rng.below(31));
                    f.len = f.type == proto::RELAX ? 1 : 5;
                    f.payload[2] = (uint8_t)(1 + rng.below(10));  // pulses of 256-2815 us
                    f.payload[4] = (uint8_t)(1 + rng.below(10));
                }
                if (f.type == proto::CONFIGURE && rng.chance(50)) {
                    f.len = 10;
                    f.payload[2] = (uint8_t)rng.below(2);
                    f.payload[1] = (uint8_t)rng.below(3);  // timeouts up to ~768 ms
                }
                const Snapshot before = snapshot(c);
                hand::Reply r;
                memset(&r, 0xEE, sizeof r);
                c.handle(f, now, r);
                CHECK_EQ(r.seq, f.seq);
                CHECK(r.type == proto::ACK || r.type == proto::NACK || r.type == proto::HELLO);
                if (r.type == proto::NACK) {
                    CHECK_EQ(r.len, 1);
                    CHECK(r.payload[0] >= 1 && r.payload[0] <= 6);
                    CHECK(snapshot(c) == before);
                } else if (r.type == proto::HELLO) {
                    CHECK_EQ(r.len, 6);
                    CHECK((r.payload[5] & ~3) == 0);
                } else {
                    CHECK_EQ(r.len, 7);
                    for (int i = 0; i < 5; ++i) CHECK(r.payload[i] <= 180);
                    CHECK((r.payload[5] & ~3) == 0);
                    CHECK_EQ(r.payload[6], proto::ALL_FINGERS & ~c.driven_mask());
                }
            }
            now += rng.chance(50) ? rng.below(5) : rng.below(400);
            const uint8_t driven_before = c.driven_mask();
            hand::Reply r;
            if (c.tick(now, r)) {
                CHECK(r.type == proto::FAILSAFE || r.type == proto::ARRIVED);
                CHECK_EQ(r.seq, 0);
                CHECK_EQ(r.len, 7);
                if (r.type == proto::FAILSAFE) CHECK(r.payload[5] & proto::STATUS_FAILSAFE);
                if (r.type == proto::ARRIVED) CHECK((r.payload[5] & proto::STATUS_MOVING) == 0);
                for (int i = 0; i < 5; ++i) CHECK(r.payload[i] <= 180);
            }
            CHECK_EQ(c.driven_mask(), driven_before);  // time alone never drives a finger
            for (int i = 0; i < 5; ++i) {
                const uint32_t pos = c.position_mdeg((uint8_t)i);
                const uint32_t goal = c.target((uint8_t)i) * 1000u;
                CHECK(pos <= 180000u);
                CHECK(c.target((uint8_t)i) <= 180);
                const uint16_t low = c.pulse_at_0_us((uint8_t)i) < c.pulse_at_180_us((uint8_t)i)
                                         ? c.pulse_at_0_us((uint8_t)i)
                                         : c.pulse_at_180_us((uint8_t)i);
                const uint16_t high = c.pulse_at_0_us((uint8_t)i) ^ c.pulse_at_180_us((uint8_t)i) ^ low;
                CHECK(low >= 400 && high <= 2600);
                CHECK(c.pulse_half_us((uint8_t)i) >= 2 * low);
                CHECK(c.pulse_half_us((uint8_t)i) <= 2 * high);
                // Never overshoots: the position is between where it was and the target.
                const uint32_t lo = prev_pos[i] < goal ? prev_pos[i] : goal;
                const uint32_t hi = prev_pos[i] < goal ? goal : prev_pos[i];
                CHECK(pos >= lo && pos <= hi);
                prev_pos[i] = pos;
            }
            if (check_failures) return;
        }
    }
}

}  // namespace

int main(int argc, char **argv) {
    const uint64_t seed = argc > 1 ? strtoull(argv[1], nullptr, 10) : 1;
    const int iterations = argc > 2 ? atoi(argv[2]) : 20000;
    Rng rng(seed);
    property_matches_reference(rng, iterations);
    property_recovers_after_garbage(rng, iterations);
    property_push_without_next_is_bounded(rng, iterations / 10 + 1);
    property_controller(rng, iterations);
    printf("fuzz: seed %llu, %d iterations\n", (unsigned long long)seed, iterations);
    return check_report("fuzz");
}
