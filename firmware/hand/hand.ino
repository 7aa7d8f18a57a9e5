// hand-mqtt firmware for an Arduino Uno: five finger servos driven over a binary serial
// protocol (docs/serial-protocol.md). Opens and builds unchanged in the Arduino IDE; the
// command-line build is firmware/Makefile.
//
// Files: config.h (pins, defaults), protocol.* (frames, CRC, parser), controller.* (what a
// frame does: targets, relax, calibration, failsafe, motion), servos.* (Timer1 servo driver),
// uart.* (USART0).
#include "config.h"
#include "controller.h"
#include "protocol.h"
#include "servos.h"
#include "uart.h"

static const uint8_t servo_pins[servos::CHANNELS] = {
    HAND_PIN_INDEX, HAND_PIN_MIDDLE, HAND_PIN_RING, HAND_PIN_PINKY, HAND_PIN_THUMB,
};

static proto::Parser parser;
static hand::Controller controller;
static uint32_t last_byte_ms;
static uint32_t last_tick_ms;

static void send_reply(const hand::Reply &reply) {
    uint8_t bytes[proto::MAX_FRAME];
    const uint8_t count = proto::encode(reply.type, reply.seq, reply.payload, reply.len, bytes);
    uart::write(bytes, count);
}

static void update_servos() {
    const uint8_t driven = controller.driven_mask();
    for (uint8_t i = 0; i < servos::CHANNELS; ++i) {
        if (driven & (1u << i)) {
            servos::write_half_us(i, controller.pulse_half_us(i));
            servos::attach(i);
        } else {
            servos::relax(i);
        }
    }
}

static void handle_frames(uint32_t now) {
    proto::Frame frame;
    while (parser.next(frame)) {
        hand::Reply reply;
        controller.handle(frame, now, reply);
        update_servos();
        send_reply(reply);
    }
}

void setup() {
    uart::begin(HAND_BAUD);
    servos::begin(servo_pins);
    const uint32_t now = millis();
    controller.begin(now);
    last_byte_ms = now;
    last_tick_ms = now;
    hand::Reply hello;
    controller.hello(0, hello);
    send_reply(hello);
}

void loop() {
    const uint32_t now = millis();

    int16_t byte;
    while ((byte = uart::read()) >= 0) {
        parser.push((uint8_t)byte);
        last_byte_ms = now;
        handle_frames(now);
    }

    // An incomplete frame after 50 ms of silence is stale: drop its sync byte and rescan
    // what followed it, until nothing is held back.
    if (parser.pending() && (uint32_t)(now - last_byte_ms) >= HAND_STALE_FRAME_MS) {
        while (parser.pending()) {
            parser.drop_head();
            handle_frames(now);
        }
    }

    if (now != last_tick_ms) {
        last_tick_ms = now;
        // Positions only change while moving or when the failsafe acts; skipping the update
        // otherwise saves five 32-bit divisions every millisecond.
        const bool was_moving = controller.status() & proto::STATUS_MOVING;
        hand::Reply report;  // FAILSAFE or ARRIVED
        const bool send = controller.tick(now, report);
        if (was_moving || send) update_servos();
        if (send) send_reply(report);
    }
}
