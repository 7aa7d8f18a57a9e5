// Build-time configuration of the hand firmware: pins, versions, servo range, defaults.
// Edit here; nothing else in the sketch hard-codes these values.
#ifndef HAND_CONFIG_H
#define HAND_CONFIG_H

#include <stdint.h>

// Firmware version reported in HELLO (major, minor, patch).
#define HAND_FW_MAJOR 2
#define HAND_FW_MINOR 0
#define HAND_FW_PATCH 0

// Serial link (docs/serial-protocol.md: 115200 baud, 8N1).
#define HAND_BAUD 115200UL

// Servo pins (Arduino numbering) in protocol finger order: index, middle, ring, pinky, thumb.
#define HAND_PIN_INDEX 11
#define HAND_PIN_MIDDLE 10
#define HAND_PIN_RING 9
#define HAND_PIN_PINKY 6
#define HAND_PIN_THUMB 5

// Pulse range until the host calibrates a finger: logical 0 -> MIN, 180 -> MAX (Arduino's
// Servo library defaults); one pulse per finger every frame.
#define HAND_SERVO_MIN_US 544U
#define HAND_SERVO_MAX_US 2400U
#define HAND_SERVO_FRAME_US 20000U

// A partial frame older than this (no byte received) is discarded.
#define HAND_STALE_FRAME_MS 50U

// Power-on defaults (docs/serial-protocol.md, "Defaults at power-on").
#define HAND_DEFAULT_ANGLE 90
#define HAND_DEFAULT_SAFE_ANGLE 180

#endif
