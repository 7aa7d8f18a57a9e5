/*
 * hand-sim: runs the hand firmware ELF in simavr as an ATmega328P at 16 MHz.
 *
 *   hand-sim [--realtime] [--reset-on-open] [--vcd FILE] [--seconds N] [--freq HZ] FIRMWARE.elf
 *
 * UART0 is bridged to a pseudo-terminal; its slave path is printed on stdout as the line
 * "PTY /dev/pts/N" (the only line on stdout; diagnostics go to stderr). The bridge lives in
 * this single thread: every emulated millisecond the pty master is polled and bytes are fed to
 * the UART while its input FIFO has room; bytes the firmware sends are written to the master.
 *
 * --realtime       throttles emulation to wall-clock time (free-running is several times
 *                  faster than a real Uno). After a stall (a busy machine) it does not run
 *                  fast to catch up: the lag is dropped, so emulated time never passes faster
 *                  than wall-clock time (within a few ms) and the firmware's timers (failsafe,
 *                  stale frames, moves) never fire early by the host's clock.
 * --reset-on-open  behaves like an Uno's DTR auto-reset: the MCU is held in reset until a
 *                  client opens the pty and is reset again whenever a client re-opens it; it
 *                  starts BOOT_DELAY_MS of wall time after the open, so the client has set up
 *                  and flushed the port (pyserial does on open) before the boot HELLO comes.
 *                  The pty is checked every emulated millisecond: a client that closes and
 *                  re-opens faster than that is not seen re-opening.
 * --vcd FILE       records the servo pins PB3 (D11), PB2 (D10), PB1 (D9), PD6 (D6), PD5 (D5);
 *                  the file is flushed about every 20 ms of emulated time, each time with a
 *                  timestamp line (so it shows how far emulation got even while no pin moves)
 *                  and a comment with the wall clock (CLOCK_MONOTONIC) and the UART's byte
 *                  counts: "$comment wall_ns N received N sent N $end".
 *                  Its clock is the emulated time since the runner started, exact to the CPU
 *                  cycle (100 ps steps), and keeps counting across resets.
 * --seconds N      stops after N emulated seconds.
 *
 * SIGUSR1: resets the MCU, as a brown-out or the reset button would, without the client
 *                  noticing anything on the pty.
 * SIGTERM / SIGINT: the VCD is flushed and the process leaves with _exit(0) (simavr's
 * shutdown paths are not needed and some of them hang).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_io.h"
#include "sim_irq.h"
#include "sim_time.h"

#define POLL_US 1000u        /* pty and clock check period, emulated microseconds */
#define VCD_FLUSH_US 20000u  /* VCD flush period, emulated microseconds */
#define MAX_AHEAD_NS 2000000  /* realtime: sleep once emulation is this far ahead */
#define MAX_BEHIND_NS 2000000 /* realtime: drop the lag once emulation is this far behind */
#define BOOT_DELAY_MS 100    /* --reset-on-open: wall time between the open and the boot */

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reset_requested;

static struct {
    unsigned long long received, sent; /* bytes host -> firmware, firmware -> host */
    int master;
    int input_full;       /* the UART said XOFF: its input FIFO is full */
    uint8_t pending[256]; /* read from the pty, not yet taken by the UART */
    size_t pending_len, pending_pos;
    avr_irq_t *input_irq;
} bridge = {.master = -1};

static void on_signal(int sig) {
    (void)sig;
    if (stop_requested) _exit(0); /* second signal: leave at once */
    stop_requested = 1;
}

static void on_reset_signal(int sig) {
    (void)sig;
    reset_requested = 1;
}

static void logger(avr_t *avr, const int level, const char *format, va_list ap) {
    (void)avr;
    if (level <= LOG_WARNING) vfprintf(stderr, format, ap);
}

static void die(const char *what) {
    fprintf(stderr, "hand-sim: %s: %s\n", what, strerror(errno));
    _exit(2);
}

static void usage(void) {
    fprintf(stderr,
            "usage: hand-sim [--realtime] [--reset-on-open] [--vcd FILE] [--seconds N] [--freq HZ]"
            " FIRMWARE.elf\n");
    _exit(2);
}

/* Emulated cycles lost by resets: some simavr versions set avr->cycle back to 0 in
 * avr_reset() (all of them forget every cycle timer), while the runner's clock, its trace and
 * its deadlines go on. */
static avr_cycle_count_t cycle_base;

static avr_cycle_count_t total_cycles(const avr_t *avr) { return cycle_base + avr->cycle; }

static void reset_mcu(avr_t *avr) {
    const avr_cycle_count_t before = avr->cycle;
    avr_reset(avr);
    if (avr->cycle < before) cycle_base += before - avr->cycle;
    bridge.pending_len = bridge.pending_pos = 0; /* bytes on their way are lost in a reset */
    bridge.input_full = 0;
}

/* The servo pins' trace, a VCD file written here (simavr's own VCD writer drains its log from
 * a cycle timer, which a reset cancels). */
#define TRACED 5
static struct {
    FILE *out;
    avr_t *avr;
    int level[TRACED]; /* -1: not known yet */
} trace;

static const struct {
    char port;
    int pin;
    const char *name;
} traced[TRACED] = {
    {'B', 3, "PB3"}, {'B', 2, "PB2"}, {'B', 1, "PB1"}, {'D', 6, "PD6"}, {'D', 5, "PD5"},
};

/* The trace's clock: emulated time in 100 ps steps (a 16 MHz cycle is exactly 625 of them). */
static unsigned long long trace_time(void) {
    const avr_cycle_count_t cycles = total_cycles(trace.avr);
    const uint64_t freq = trace.avr->frequency;
    return cycles / freq * 10000000000ull + cycles % freq * 10000000000ull / freq;
}

static void on_pin_change(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    const int index = (int)(intptr_t)param;
    const int level = value ? 1 : 0;
    if (trace.level[index] == level) return;
    trace.level[index] = level;
    fprintf(trace.out, "#%llu\n%d%c\n", trace_time(), level, '!' + index);
}

/* Written at every flush: how far the trace goes (a reader knows it even while no pin moves),
 * the wall clock (CLOCK_MONOTONIC, ns) at that emulated time, and the bytes the UART took in
 * and sent so far. */
static void flush_trace(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fprintf(trace.out, "#%llu\n$comment wall_ns %llu received %llu sent %llu $end\n", trace_time(),
            (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec,
            bridge.received, bridge.sent);
    fflush(trace.out);
}

static void open_trace(avr_t *avr, const char *path) {
    trace.out = fopen(path, "w");
    if (!trace.out) die(path);
    trace.avr = avr;
    fprintf(trace.out, "$timescale 100ps $end\n$scope module logic $end\n");
    for (int i = 0; i < TRACED; ++i) {
        trace.level[i] = -1;
        fprintf(trace.out, "$var wire 1 %c %s $end\n", '!' + i, traced[i].name);
        avr_irq_t *irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(traced[i].port), traced[i].pin);
        avr_irq_register_notify(irq, on_pin_change, (void *)(intptr_t)i);
    }
    fprintf(trace.out, "$upscope $end\n$enddefinitions $end\n");
}

/* Firmware -> host: one byte from the UART. */
static void on_uart_output(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    uint8_t byte = (uint8_t)value;
    ++bridge.sent;
    /* A full pty (nobody reading) drops the byte, like a UART with no listener. */
    if (write(bridge.master, &byte, 1) < 0 && errno != EAGAIN && errno != EIO) {
        fprintf(stderr, "hand-sim: pty write: %s\n", strerror(errno));
    }
}

static void on_uart_xon(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)value;
    (void)param;
    bridge.input_full = 0;
}

static void on_uart_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)value;
    (void)param;
    bridge.input_full = 1;
}

/* Host -> firmware: move what the pty has into the UART's input FIFO while it has room. */
static void pump_input(void) {
    for (;;) {
        if (bridge.pending_pos == bridge.pending_len) {
            ssize_t n = read(bridge.master, bridge.pending, sizeof bridge.pending);
            if (n <= 0) return; /* EAGAIN: nothing there */
            bridge.pending_len = (size_t)n;
            bridge.pending_pos = 0;
        }
        while (bridge.pending_pos < bridge.pending_len) {
            if (bridge.input_full) return;
            avr_raise_irq(bridge.input_irq, bridge.pending[bridge.pending_pos++]);
            ++bridge.received;
        }
    }
}

static void open_pty(void) {
    bridge.master = posix_openpt(O_RDWR | O_NOCTTY);
    if (bridge.master < 0) die("posix_openpt");
    if (grantpt(bridge.master) < 0 || unlockpt(bridge.master) < 0) die("grantpt/unlockpt");
    const char *name = ptsname(bridge.master);
    if (!name) die("ptsname");
    /* Open the slave once to make it raw (the settings outlive this descriptor), then close
     * it: from then on the master reports POLLHUP while no client has the slave open. */
    int slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) die("open pty slave");
    struct termios tio;
    if (tcgetattr(slave, &tio) < 0) die("tcgetattr");
    cfmakeraw(&tio); /* no echo, no line editing, no CR/LF translation */
    if (tcsetattr(slave, TCSANOW, &tio) < 0) die("tcsetattr");
    close(slave);
    int flags = fcntl(bridge.master, F_GETFL);
    if (flags < 0 || fcntl(bridge.master, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
    printf("PTY %s\n", name);
    fflush(stdout);
}

/* Whether a client has the pty slave open. */
static int client_connected(void) {
    struct pollfd pfd = {.fd = bridge.master, .events = POLLIN};
    if (poll(&pfd, 1, 0) < 0) return 1;
    return !(pfd.revents & POLLHUP);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    int realtime = 0;
    int reset_on_open = 0;
    const char *vcd_path = NULL;
    const char *elf_path = NULL;
    double seconds = 0;
    uint32_t freq = 16000000;

    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--realtime")) {
            realtime = 1;
        } else if (!strcmp(argv[i], "--reset-on-open")) {
            reset_on_open = 1;
        } else if (!strcmp(argv[i], "--vcd") && i + 1 < argc) {
            vcd_path = argv[++i];
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--freq") && i + 1 < argc) {
            freq = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (argv[i][0] == '-' || elf_path) {
            usage();
        } else {
            elf_path = argv[i];
        }
    }
    if (!elf_path || freq == 0) usage();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reset_signal;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    avr_global_logger_set(logger);

    static elf_firmware_t fw; /* large: keep it off the stack */
    if (elf_read_firmware(elf_path, &fw) != 0) {
        fprintf(stderr, "hand-sim: cannot read %s\n", elf_path);
        _exit(2);
    }
    strcpy(fw.mmcu, "atmega328p");
    fw.frequency = freq;

    avr_t *avr = avr_make_mcu_by_name(fw.mmcu);
    if (!avr) {
        fprintf(stderr, "hand-sim: simavr does not know %s\n", fw.mmcu);
        _exit(2);
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    avr->frequency = freq;
    avr->log = LOG_WARNING;

    /* Plain byte stream on UART0: no console echo of the firmware's bytes, no poll sleeping. */
    uint32_t uart_flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &uart_flags);
    uart_flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &uart_flags);

    bridge.input_irq = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            on_uart_output, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
                            on_uart_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            on_uart_xoff, NULL);

    if (vcd_path) open_trace(avr, vcd_path);

    open_pty();

    const avr_cycle_count_t poll_cycles = avr_usec_to_cycles(avr, POLL_US);
    const avr_cycle_count_t flush_cycles = avr_usec_to_cycles(avr, VCD_FLUSH_US);
    const avr_cycle_count_t stop_cycle =
        seconds > 0 ? (avr_cycle_count_t)(seconds * (double)freq) : 0;
    avr_cycle_count_t next_poll = 0, next_flush = flush_cycles;
    /* Realtime anchor: emulated cycle and wall time at which they were last lined up. */
    avr_cycle_count_t anchor_cycle = total_cycles(avr);
    uint64_t anchor_ns = now_ns();
    int connected = 0;
    int state = cpu_Running;

    if (reset_on_open) {
        /* Held in reset until the first client arrives. */
        while (!stop_requested && !client_connected()) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        struct timespec boot = {0, BOOT_DELAY_MS * 1000000L};
        nanosleep(&boot, NULL);
        connected = 1;
        anchor_cycle = total_cycles(avr);
        anchor_ns = now_ns();
    }

    while (!stop_requested) {
        state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) break;
        const avr_cycle_count_t now = total_cycles(avr);
        if (now < next_poll) continue;
        next_poll = now + poll_cycles;
        if (reset_on_open) {
            const int now_connected = client_connected();
            if (now_connected && !connected) {
                struct timespec boot = {0, BOOT_DELAY_MS * 1000000L};
                nanosleep(&boot, NULL);
                reset_mcu(avr);
                anchor_cycle = total_cycles(avr);
                anchor_ns = now_ns();
            }
            connected = now_connected;
        }
        if (reset_requested) {
            reset_requested = 0;
            reset_mcu(avr);
        }
        pump_input();
        if (trace.out && now >= next_flush) {
            next_flush = now + flush_cycles;
            flush_trace();
        }
        if (stop_cycle && now >= stop_cycle) break;
        if (realtime) {
            const uint64_t emulated_ns = avr_cycles_to_nsec(avr, total_cycles(avr) - anchor_cycle);
            const uint64_t wall_ns = now_ns() - anchor_ns;
            if (emulated_ns > wall_ns + MAX_AHEAD_NS) {
                const uint64_t ahead = emulated_ns - wall_ns;
                struct timespec ts = {(time_t)(ahead / 1000000000ull),
                                      (long)(ahead % 1000000000ull)};
                nanosleep(&ts, NULL);
            } else if (wall_ns > emulated_ns + MAX_BEHIND_NS) {
                /* Behind: line the clocks up again rather than race to catch up. */
                anchor_cycle = total_cycles(avr);
                anchor_ns = now_ns();
            }
        }
    }

    if (getenv("HAND_SIM_DEBUG")) {
        fprintf(stderr, "hand-sim: state %d, cycle %llu, pc 0x%04x\n", state,
                (unsigned long long)avr->cycle, avr->pc);
    }
    if (trace.out) fclose(trace.out);
    if (state == cpu_Crashed) {
        fprintf(stderr, "hand-sim: the firmware crashed at pc 0x%04x\n", avr->pc);
        _exit(1);
    }
    _exit(0);
}
