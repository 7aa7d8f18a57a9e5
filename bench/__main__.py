"""Run the benchmark suite: ``python -m bench [--quick] [--only NAME ...] [--json FILE]``."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bench.api import api_latency
from bench.common import ROOT, broker_process
from bench.drivers import drivers
from bench.flood import flood
from bench.footprint import firmware_size, idle, state_file, wire
from bench.hands import many_hands
from bench.latency import command_latency, relay_floor
from bench.startup import cli_command, up_ready, up_stop_burst
from bench.takeover import takeover
from bench.web import web_page

logger = logging.getLogger("bench")
SCENARIOS = (
    "latency",
    "flood",
    "hands",
    "cli",
    "footprint",
    "api",
    "drivers",
    "web",
    "takeover",
)
Row = tuple[str, str, str, str, str]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument(
        "--brokers", nargs="*", choices=("mosquitto", "amqtt"), default=["mosquitto", "amqtt"]
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results: dict[str, Any] = {"machine": platform.platform(), "started": time.ctime()}
    rows: list[Row] = []
    for kind in args.brokers:
        try:
            _run_broker(kind, args, results, rows)
        except Exception as exc:  # a failed scenario is reported, the others still run
            logger.exception("benchmarks on %s failed", kind)
            rows.append(("error", kind, type(exc).__name__, str(exc)[:60], "MISS"))
    _run_common(args, results, rows)
    _print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=_plain) + "\n")
    print(f"\nfigures written to {args.json}")


def _run_broker(
    kind: str, args: argparse.Namespace, results: dict[str, Any], rows: list[Row]
) -> None:
    q = args.quick
    with broker_process(kind) as broker:
        if "latency" in args.only:
            samples, warmup = (300, 50) if q else (2000, 200)
            floor = relay_floor(broker.url, broker.port, samples, warmup)
            ours = command_latency(broker.url, samples, warmup)
            results[f"latency/{kind}"] = {"floor": floor, **ours}
            ratio = ours["frame"].p50 / floor.p50
            rows += [
                (
                    "latency",
                    kind,
                    "two-hop relay floor p50 / p99 µs",
                    f"{floor.p50:.0f} / {floor.p99:.0f}",
                    "",
                ),
                (
                    "latency",
                    kind,
                    "command → frame on the pty p50 / p99 µs",
                    f"{ours['frame'].p50:.0f} / {ours['frame'].p99:.0f}",
                    _budget(
                        kind,
                        ratio <= 1.25 and ours["frame"].p99 <= 2000,
                        "p50 ≤ 1.25× floor, p99 ≤ 2000",
                    ),
                ),
                ("latency", kind, "  ratio to the floor (p50)", f"{ratio:.2f}×", ""),
                (
                    "latency",
                    kind,
                    "command → reported p50 / p99 µs",
                    f"{ours['reported'].p50:.0f} / {ours['reported'].p99:.0f}",
                    "",
                ),
            ]
        if "flood" in args.only:
            # amqtt drains about 3,000 commands/s here: a smaller flood keeps the run short.
            publishers, each = (10, 500) if kind == "amqtt" else (10, 2000 if q else 10_000)
            f = flood(broker.url, publishers, each)
            results[f"flood/{kind}"] = f
            rows += [
                (
                    "flood",
                    kind,
                    f"{f['commands']} commands: lost / errors",
                    f"{f['lost']} / {f['errors']}",
                    _budget(kind, f["lost"] == 0, "0 lost"),
                ),
                (
                    "flood",
                    kind,
                    "arbiter commands/s while flooded / draining alone",
                    f"{f['arbiter_rate']:.0f} / {f['drain_rate']:.0f}",
                    _budget(kind, f["drain_rate"] >= 10_000, "≥ 10000"),
                ),
                (
                    "flood",
                    kind,
                    "final state on the serial line after processed, ms",
                    f"{f['final_on_line_ms']:.1f}",
                    _budget(kind, f["final_on_line_ms"] <= 50, "≤ 50"),
                ),
                ("flood", kind, "serial frames written", str(f["frames"]), ""),
                (
                    "flood",
                    kind,
                    "arbiter CPU per command µs",
                    f"{f['arbiter_cpu_us_per_command']:.0f}",
                    "",
                ),
                (
                    "flood",
                    kind,
                    "peak RSS arbiter / device MiB",
                    f"{f['arbiter_peak_rss_mib']:.1f} / {f['device_peak_rss_mib']:.1f}",
                    _budget(
                        kind, max(f["arbiter_peak_rss_mib"], f["device_peak_rss_mib"]) <= 40, "≤ 40"
                    ),
                ),
            ]
        if "hands" in args.only and kind == "mosquitto":
            h = many_hands(broker.url, 1000, 5000 if q else 20_000, 300 if q else 2000)
            results[f"hands/{kind}"] = h
            lat = h["latency_reported"]
            rows += [
                (
                    "1000 hands",
                    kind,
                    "commands/s",
                    f"{h['rate']:.0f}",
                    _budget(kind, h["rate"] >= 10_000, "≥ 10000"),
                ),
                (
                    "1000 hands",
                    kind,
                    "arbiter CPU per command µs",
                    f"{h['arbiter_cpu_us_per_command']:.0f}",
                    "",
                ),
                (
                    "1000 hands",
                    kind,
                    "command → reported p50 / p99 µs",
                    f"{lat.p50:.0f} / {lat.p99:.0f}",
                    _budget(kind, lat.p99 <= 5000, "p99 ≤ 5000"),
                ),
                (
                    "1000 hands",
                    kind,
                    "arbiter memory per hand KiB",
                    f"{h['kib_per_hand']:.2f}",
                    _budget(kind, h["kib_per_hand"] <= 10, "≤ 10"),
                ),
            ]
        if "api" in args.only:
            samples, warmup = (300, 50) if q else (2000, 200)
            a = api_latency(broker.url, samples, warmup)
            results[f"api/{kind}"] = a
            for face in ("sync", "async"):
                name = "HandClient" if face == "sync" else "AsyncHandClient"
                for wait in ("accepted", "reported"):
                    s = a[f"{face}_{wait}"]
                    rows.append(
                        (
                            "api",
                            kind,
                            f"{name}.set() → {wait} p50 / p99 µs",
                            f"{s.p50:.0f} / {s.p99:.0f}",
                            "",
                        )
                    )
            g = a["gesture"]
            late = g["late_ms"]
            rows += [
                (
                    "gesture",
                    kind,
                    f"{g['steps']} steps of 50 ms: lateness p50 / p99 / max ms",
                    f"{late.p50:.1f} / {late.p99:.1f} / {late.max:.1f}",
                    _budget(kind, late.p99 <= 20, "p99 ≤ 20"),
                ),
                (
                    "gesture",
                    kind,
                    "  drift first → last step ms; length / due s",
                    f"{g['drift_ms']:.1f}; {g['length_s']:.2f} / {g['due_s']:.2f}",
                    _budget(kind, abs(g["drift_ms"]) <= 20, "|drift| ≤ 20"),
                ),
            ]
        if "drivers" in args.only and kind == "mosquitto":
            d = drivers(broker.url, 20 if q else 100)
            results["drivers"] = d
            for name, label in (
                ("bundled", "bundled firmware"),
                ("standard-firmata", "StandardFirmata"),
            ):
                figures = d[name]
                pulse, confirmed = figures["pulse_ms"], figures["reported_ms"]
                rows += [
                    (
                        "drivers",
                        kind,
                        f"{label}: command → pulse on all 5 pins p50 / p99 ms",
                        f"{pulse.p50:.1f} / {pulse.p99:.1f}",
                        "",
                    ),
                    (
                        "drivers",
                        kind,
                        f"{label}: command → reported p50 / p99 ms",
                        f"{confirmed.p50:.1f} / {confirmed.p99:.1f}",
                        "",
                    ),
                    (
                        "drivers",
                        kind,
                        f"{label}: full update bytes to / from the board",
                        f"{figures['bytes_to_board']} / {figures['bytes_from_board']}",
                        "",
                    ),
                ]
        if "takeover" in args.only:
            t = takeover(broker.url, broker.url, broker.url, 3 if q else 10)
            results[f"takeover/{kind}"] = t
            rows += _takeover_rows(kind, t)
        if "cli" in args.only and kind == "mosquitto":
            c = cli_command(broker.url, 10 if q else 20)
            results["cli/pose"] = c
            rows.append(
                (
                    "cli",
                    kind,
                    "hand-mqtt pose peace, median ms",
                    f"{c['median_ms']:.0f}",
                    _budget(kind, c["median_ms"] <= 350, "≤ 350"),
                )
            )
        if "web" in args.only:
            w = web_page(broker.url, broker.ws_url, 5 if q else 20, 10 if q else 40, 3.0)
            results[f"web/{kind}"] = w
            rows += [
                (
                    "web",
                    kind,
                    "page load → ready for commands, median ms",
                    f"{w['load_ms']:.0f}",
                    "",
                ),
                (
                    "web",
                    kind,
                    "click (WebDriver) → command at a subscriber p50 / p90 ms",
                    f"{w['click_to_broker_ms'].p50:.1f} / {w['click_to_broker_ms'].p90:.1f}",
                    "",
                ),
                (
                    "web",
                    kind,
                    "  clicked by a script in the page p50 / p90 ms",
                    f"{w['script_click_to_broker_ms'].p50:.1f}"
                    f" / {w['script_click_to_broker_ms'].p90:.1f}",
                    "",
                ),
                (
                    "web",
                    kind,
                    "click → hand reported p50 / p90 ms",
                    f"{w['click_to_hand_ms'].p50:.1f} / {w['click_to_hand_ms'].p90:.1f}",
                    "",
                ),
                (
                    "web",
                    kind,
                    f"slider drag {w['drag_seconds']:.1f} s: commands/s (most in 1 s)",
                    f"{w['drag_rate']:.1f} ({w['drag_busiest_second']})",
                    _budget(
                        kind,
                        w["drag_busiest_second"] <= 21 and w["drag_final_sent"],
                        "≤ 20/s (+1 for arrival jitter), final value sent",
                    ),
                ),
            ]
        if "footprint" in args.only and kind == "mosquitto":
            i = idle(broker.url, 5 if q else 10)
            results["idle"] = i
            for name, figures in i.items():
                rows.append(
                    (
                        "idle",
                        kind,
                        f"{name}: RSS MiB / CPU %",
                        f"{figures['rss_mib']:.1f} / {figures['cpu_percent']:.2f}",
                        _budget(kind, figures["cpu_percent"] <= 1, "CPU ≤ 1%"),
                    )
                )


def _takeover_rows(kind: str, t: dict[str, Any]) -> list[Row]:
    took = t["takeover_ms"]
    return [
        (
            "takeover",
            kind,
            f"arbiter killed → first command served by the standby, ms p50 / max ({t['rounds']})",
            f"{took.p50:.0f} / {took.max:.0f}",
            "",
        ),
        (
            "takeover",
            kind,
            "  of which killed → the standby's lease (will, claim) p50 / max",
            f"{t['lease_ms'].p50:.1f} / {t['lease_ms'].max:.1f}",
            "",
        ),
        (
            "takeover",
            kind,
            "  commands sent / applied / refused / lost or twice",
            f"{t['sent']} / {t['applied']} / {t['refused']} / {t['twice_or_lost']}",
            _budget(kind, t["twice_or_lost"] == 0, "0 lost or twice"),
        ),
    ]


def _run_common(args: argparse.Namespace, results: dict[str, Any], rows: list[Row]) -> None:
    if "takeover" in args.only:
        from harness.cluster import AedesCluster, missing_parts

        missing = missing_parts()
        if missing is not None:
            rows.append(("takeover", "aedes", "not run", missing[:60], ""))
        else:
            cluster = AedesCluster(3)
            cluster.start()
            try:
                t = takeover(
                    cluster.urls(1, 2),
                    cluster.urls(2, 1),
                    cluster.nodes[0].url,
                    3 if args.quick else 10,
                )
                results["takeover/aedes"] = t
                rows += _takeover_rows("aedes", t)
            finally:
                cluster.cleanup()
    if "cli" in args.only:
        u = up_ready(3 if args.quick else 5)
        bare = up_ready(3 if args.quick else 5, web=False)
        results["cli/up"] = u
        results["cli/up-no-web"] = bare
        rows += [
            (
                "cli",
                "amqtt",
                "hand-mqtt up → hand ready, median ms",
                f"{u['median_ms']:.0f}",
                _budget("", u["median_ms"] <= 2000, "≤ 2000"),
            ),
            ("cli", "amqtt", "  the same with --no-web", f"{bare['median_ms']:.0f}", ""),
            (
                "cli",
                "amqtt",
                "hand-mqtt up: one SIGINT → exited, median / max ms",
                f"{u['stop_median_ms']:.0f} / {u['stop_max_ms']:.0f}",
                _budget("", u["stop_max_ms"] <= 2000, "≤ 2000"),
            ),
        ]
        for count, how in ((2, "a repeat: a clean stop"), (10, "the third forces the exit")):
            burst = up_stop_burst(3 if args.quick else 5, count)
            results[f"cli/up-stop-burst-{count}"] = burst
            rows.append(
                (
                    "cli",
                    "amqtt",
                    f"  {count} SIGTERMs 1 ms apart ({how}), median / max ms",
                    f"{burst['median_ms']:.0f} / {burst['max_ms']:.0f}",
                    _budget("", burst["max_ms"] <= 2000, "≤ 2000"),
                )
            )
    if "footprint" in args.only:
        w = wire()
        results["wire"] = w
        rows += [
            (
                "wire",
                "",
                "full-hand update bytes / µs at 115200",
                f"{w['full_bytes']} / {w['full_us']:.0f}",
                _budget("", w["full_bytes"] <= 10, "≤ 10"),
            ),
            (
                "wire",
                "",
                "single-finger update bytes / µs",
                f"{w['single_bytes']} / {w['single_us']:.0f}",
                "",
            ),
            (
                "wire",
                "",
                "Firmata full update bytes / µs at 57600",
                f"{w['firmata_full_bytes']} / {w['firmata_full_us_57600']:.0f}",
                "",
            ),
        ]
        journal = state_file()
        results["state_file"] = journal
        rows.append(
            (
                "state file",
                "",
                "arbiter --state-file: µs per accepted command",
                f"{journal['us_per_state']:.1f}",
                "",
            )
        )
        fw = firmware_size()
        results["firmware"] = fw
        if fw is not None:
            rows.append(
                (
                    "firmware",
                    "",
                    "flash / RAM bytes",
                    f"{fw['flash_bytes']} / {fw['ram_bytes']}",
                    _budget(
                        "", fw["flash_bytes"] <= 5120 and fw["ram_bytes"] <= 384, "≤ 5120 / ≤ 384"
                    ),
                )
            )


def _budget(kind: str, ok: bool, text: str) -> str:
    if kind == "amqtt":
        return f"({text})"  # the budget is set for Mosquitto; amqtt is shown for comparison
    return f"{'ok' if ok else 'MISS'}  {text}"


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def _print_table(rows: list[Row]) -> None:
    header: Row = ("scenario", "broker", "measure", "value", "budget")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))


if __name__ == "__main__":
    main()
