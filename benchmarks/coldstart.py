"""One variant in a fresh process: time to its first embedding, then its peak RSS on a workload.

The parent starts ``python -m benchmarks.coldstart SPEC.json`` and times it until the line
``first-embedding`` appears on stdout (interpreter start, imports and model load included); the
child then embeds the workload and prints its peak RSS as JSON on the last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    from benchmarks.variants import SPECS, Prepared, load

    spec = next(s for s in SPECS if s.name == job["variant"])
    prepared = Prepared.from_json(job["prepared"])
    encode = load(spec, prepared)
    encode(["first embedding"], 1)
    print("first-embedding", flush=True)
    encode(job["texts"], job["batch_size"])
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident set size.

    VmHWM, not getrusage: Linux carries ru_maxrss over from the parent through fork and exec,
    so a child of a large process would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


if __name__ == "__main__":
    main()
