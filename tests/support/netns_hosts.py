"""Emulated hosts on one machine: each in its own network namespace, whose eth0 is one end
of a veth pair; the other ends hang on a bridge inside one more namespace (the "switch"),
so that the hosts reach each other only over that bridge, at 198.18.<n>.x/24 (RFC 2544's
benchmarking range), and the machine's own network is never touched. Each host's name
(and any aliases) resolves in every host through /etc/netns/<ns>/hosts, which `ip netns
exec` mounts over /etc/hosts; argv() runs a command as the host, under its host name (a
UTS namespace). Needs root (ip netns, unshare)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from typing import Callable


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def netns_problem() -> str:
    """Why network namespaces cannot be used here, or "" when they can."""
    missing = [t for t in ("ip", "unshare") if not shutil.which(t)]
    if missing:
        return f"host emulation needs {missing} (iproute2, util-linux)"
    if os.geteuid() != 0:
        return "host emulation needs root for ip netns and unshare (CI runs as root)"
    probe = sh("ip", "netns", "add", f"ddpnet-probe{os.getpid()}", check=False)
    sh("ip", "netns", "del", f"ddpnet-probe{os.getpid()}", check=False)
    return "" if probe.returncode == 0 else f"cannot create a network namespace: {probe.stderr}"


class NetnsHosts:
    """A set of named hosts on one bridge; a context manager that removes them all."""

    def __init__(self, names: list[str], tag: str = "ddpnet",
                 aliases: Callable[[str], list[str]] = lambda name: []):
        self.tag = f"{tag}{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        self.subnet = f"198.18.{os.getpid() % 250 + 1}"
        self.names = names
        self.aliases = aliases
        self.ns = {name: f"{self.tag}-{i}" for i, name in enumerate(names)}
        self.ip = {name: f"{self.subnet}.{10 + i}" for i, name in enumerate(names)}

    def __enter__(self):
        try:
            sh("ip", "netns", "add", self.switch)
            sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", "br0", "up")
            hosts = "127.0.0.1 localhost\n" + "".join(
                " ".join([self.ip[n], n] + self.aliases(n)) + "\n" for n in self.names)
            for i, name in enumerate(self.names):
                ns = self.ns[name]
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", self.switch, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
                sh("ip", "-n", self.switch, "link", "set", f"v{i}", "master", "br0", "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.ip[name]}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                etc = pathlib.Path("/etc/netns") / ns
                etc.mkdir(parents=True, exist_ok=True)
                (etc / "hosts").write_text(hosts)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for ns in list(self.ns.values()) + [self.switch]:
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(pathlib.Path("/etc/netns") / ns, ignore_errors=True)

    def argv(self, name: str, command: list[str]) -> list[str]:
        """command run as host `name`: its network namespace, its host name."""
        return ["ip", "netns", "exec", self.ns[name], "unshare", "--uts", "--",
                "sh", "-c", 'hostname "$0" && exec "$@"', name] + command
