"""Draws the game day's picture: devices connected to each region over time,
with the game day's events marked, from its JSON report.

usage: gameday_plot.py REPORT.json PICTURE.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        report = json.load(f)
    samples = report["samples"]
    regions = sorted({r for s in samples for r in s["connected"]})
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    times = [s["seconds"] for s in samples]
    for region in regions:
        ax.plot(times, [s["connected"].get(region, 0) for s in samples], label=region, linewidth=2)
    for event in report["events"]:
        ax.axvline(event["seconds"], color="grey", linewidth=0.6, linestyle=":")
    marks = [e for e in report["events"] if e["event"].startswith(("fault", "answers moved", "the failover put"))]
    top = max([report["devices"], 1])
    for event in marks:
        ax.annotate(event["event"].split(":")[0], (event["seconds"], top * 0.97), rotation=90,
                    fontsize=7, va="top", ha="right", color="dimgrey")
    ax.set_xlabel("seconds since the fleet started")
    ax.set_ylabel("devices connected")
    rehome = report["rehome"]
    ax.set_title(
        f"geoprov game day: {report['devices']} devices, quota scale {report['quotaScale']}; "
        f"re-homed p50 {rehome['answersMovedToP50Seconds']:.0f} s, 100 % {rehome['answersMovedToAllSeconds']:.0f} s "
        "after the answers moved",
        fontsize=9,
    )
    ax.set_ylim(0, top * 1.02)
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
