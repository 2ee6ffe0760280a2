"""Sample the memory Ray's processes take while a command runs: Ray's own services (GCS, raylet,
agents, monitors) apart from its worker processes (`ray::...`, which hold the models and do the
work), peak resident set sizes over the run. The object store is a shared-memory region capped
by `executor.object_store_mb` (or Ray's own default), counted in neither.

    python benchmarks/ray_memory.py --out metrics.json -- .venv/bin/dvc repro

Prints and writes (with --out) the command's wall time and the peaks in MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SERVICES = ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env", "monitor.py")


def ray_memory() -> dict[str, float]:
    """Resident MB of Ray's services and of its worker processes, now."""
    out = subprocess.run(["ps", "-eo", "rss=,args="], capture_output=True, text=True).stdout
    services = workers = 0.0
    for line in out.splitlines():
        rss, _, args = line.strip().partition(" ")
        if not rss.isdigit():
            continue
        if args.startswith("ray::") or "default_worker.py" in args:
            workers += int(rss) / 1024
        elif any(name in args for name in SERVICES) and "ray" in args:
            services += int(rss) / 1024
    return {"services_mb": services, "workers_mb": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak = {"services_mb": 0.0, "workers_mb": 0.0, "total_mb": 0.0}
    while process.poll() is None:
        now = ray_memory()
        now["total_mb"] = now["services_mb"] + now["workers_mb"]
        peak = {key: max(peak[key], now[key]) for key in peak}
        time.sleep(args.every)
    result = {
        "command": " ".join(command),
        "returncode": process.returncode,
        "wall_seconds": round(time.perf_counter() - started, 1),
        **{f"peak_{key}": round(value, 1) for key, value in peak.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
