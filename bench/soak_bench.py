"""The soak's summary rows: `python -m bench --only soak [--minutes N]` (bench/soak.py runs it).

Default 2 minutes (`--quick`: 2 as well; one round of every fault takes ROUND_S). The one-page
report is printed above the table and kept, with the engine's and server's logs, in a folder
named on the first line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench import Row
from bench.soak import run_soak


def rows(quick: bool, minutes: float | None = None) -> list[Row]:
    minutes = minutes or 2.0
    workdir = Path(tempfile.mkdtemp(prefix="backline-soak-"))
    print(f"# soak: {minutes:g} min in {workdir}", flush=True)
    report = run_soak(minutes, workdir)
    print("\n".join(report.lines()), flush=True)
    where = f"{minutes:g}min"
    lat, off = np.asarray(report.latency_ms), np.abs(report.clock_offsets_ms)
    pct = (lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan"))
    out = [Row(f"soak.unexplained_gaps@{where}", len(report.unexplained), "count", f"of {len(report.gaps)} silent runs > 10 ms"),
           Row(f"soak.faults_unrecovered@{where}", len(report.unrecovered), "count", f"of {len(report.faults)} faults"),
           Row(f"soak.crashes@{where}", len(report.crashes), "count"),
           Row(f"soak.xruns@{where}", report.xruns, "count", "JACK's, seen by the recorder"),
           Row(f"soak.underruns@{where}", report.underruns, "count", "the engine's, summed over its lives"),
           Row(f"soak.control_to_sound_p50@{where}", pct(lat, 50), "ms", f"master-gain probe over OSC, {len(lat)} probes"),
           Row(f"soak.control_to_sound_p99@{where}", pct(lat, 99), "ms"),
           Row(f"soak.clock_offset_p99@{where}", pct(off, 99), "ms", "engine clock-out tick - the source's nearest"),
           Row(f"soak.clock_drift@{where}", report.clock_drift_ms, "ms", "median offset, last tenth of the run - first tenth"),
           Row(f"soak.rss_growth_after_5min@{where}", report.rss_growth_mb() or 0.0, "MB", "the last engine life")]
    for fault in report.faults:
        name = fault.name.replace(" ", "_")
        out.append(Row(f"soak.recover@{name}@{fault.started - report.faults[0].started:.0f}s",
                       fault.recovered_s if fault.recovered_s is not None else "never", "s", fault.detail))
    return out
