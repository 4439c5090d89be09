"""The machine a benchmark ran on, for every result's JSON (meta.machine) and table (one
`# machine:` line): cores and CPU model (os.cpu_count, /proc/cpuinfo), memory
(/proc/meminfo) and the disk under a path (the filesystem type and device from `df -T`,
size and free space from statvfs). Timings on a shared machine move with its load, so the
load average at the start is recorded too.

Linux only; a field that cannot be read is None, never an error.
"""
from __future__ import annotations

import os
import pathlib
import subprocess


def _cpu_model() -> str | None:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _disk(path: str) -> dict:
    path = str(path)
    while not os.path.exists(path):  # a results directory not made yet: its parent's disk
        path = os.path.dirname(path) or "."
    disk = {"path": os.path.abspath(path), "filesystem": None, "device": None, "mount": None,
            "size_gib": None, "free_gib": None}
    try:
        out = subprocess.run(["df", "-PT", path], capture_output=True, text=True, timeout=10).stdout
        fields = out.splitlines()[1].split()
        disk["device"], disk["filesystem"], disk["mount"] = fields[0], fields[1], fields[-1]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    try:
        st = os.statvfs(path)
        disk["size_gib"] = round(st.f_blocks * st.f_frsize / (1 << 30), 1)
        disk["free_gib"] = round(st.f_bavail * st.f_frsize / (1 << 30), 1)
    except OSError:
        pass
    return disk


def describe(disk_path: str = ".") -> dict:
    """The machine, with the disk that holds `disk_path` (where the benchmark writes)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count(), "cpu_model": _cpu_model(), "memory_gib": _memory_gib(),
            "disk": _disk(disk_path), "loadavg_at_start": load}


def line(machine: dict) -> str:
    """One `#` line for a table: '# machine: 2 cores (...), 23.4 GiB memory, disk ext4 ...'."""
    disk = machine.get("disk") or {}
    text = (f"# machine: {machine.get('cpu_count')} cores ({machine.get('cpu_model') or 'unknown CPU'}), "
            f"{machine.get('memory_gib')} GiB memory, disk {disk.get('filesystem')} on {disk.get('device')} "
            f"({disk.get('size_gib')} GiB, {disk.get('free_gib')} GiB free) at {disk.get('path')}")
    if machine.get("loadavg_at_start") is not None:
        text += f"; load average at start {machine['loadavg_at_start'][0]}"
    return text
