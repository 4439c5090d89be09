"""Runs the CPU PyTorchJob (k8s/pytorchjob-cpu.yaml) as its pods would run in a cluster,
each replica on its own emulated host, and checks that the job trains to completion and
that the master writes its checkpoint.

Each pod (ddprun-cpu-master-0, ddprun-cpu-worker-0, ...) gets:
- its own network namespace, whose eth0 is one end of a veth pair; the other ends hang
  on a bridge inside one more namespace (the "switch"), so that the pods reach each
  other only over that bridge, at 198.18.<n>.x/24 (RFC 2544's benchmarking range), and
  the host's own network is never touched;
- the pod names resolvable as the operator's headless services make them
  (/etc/netns/<ns>/hosts, which `ip netns exec` mounts over /etc/hosts), and its pod
  name as host name (a UTS namespace);
- the environment the training operator injects (MASTER_ADDR=ddprun-cpu-master-0,
  MASTER_PORT from the manifest's pytorchjob-port, WORLD_SIZE, RANK, PET_*; built by
  k8s_jobs.py from ../shared/k8s-env-contract.md) plus the container's own env;
- the manifest's own command and args, with the image's paths mapped to this machine:
  ddprun and ddptrain of the build tree, a shared checkpoint directory standing for the
  PersistentVolumeClaim, and the image's config file with a short schedule (40 steps).
The workers are started before the master, as pods may be.
- Eviction: the master pod gets SIGTERM midway; every pod must exit with a code
  restartPolicy ExitCode retries (>= 128), and the recreated pods must resume from the
  master's checkpoint, finish, and leave the final checkpoint on the volume.
- Lost peer: a worker pod is killed (SIGKILL); the other pods must exit >= 128 (200).

Needs root (ip netns, unshare); CI runs as root. Without it the test fails and says why.

Usage: pod_emulation_test.py REPO_DIR DDPRUN DDPTRAIN
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from netns_hosts import NetnsHosts, sh  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPRUN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/launcher/ddprun")
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")
STEPS = 40
TIMEOUT = 300  # seconds for the whole job


def short_config(path: pathlib.Path, data_dir: str) -> None:
    """The image's /etc/ddprun/ddptrain.yaml with a short schedule and the host's copy of
    the data set the image ships."""
    config = yaml.safe_load((REPO / "docker/ddptrain.yaml").read_text())
    assert config["data-dir"] == "/data/fashion-mnist", config
    config.update({"data-dir": data_dir, "max-steps": STEPS, "log-every": 10, "eval-batch-size": 2000})
    path.write_text(yaml.safe_dump(config))


class Cluster(NetnsHosts):
    """The pods of a job as emulated hosts, their names resolvable as the operator's
    headless services make them."""

    def __init__(self, pods: list[k8s_jobs.Pod]):
        super().__init__([p.name for p in pods], tag="ddpk8s",
                         aliases=lambda name: [f"{name}.default.svc.cluster.local"])
        self.pods = pods

    def argv(self, pod: k8s_jobs.Pod, command: list[str]) -> list[str]:
        return super().argv(pod.name, command)


class PodEmulationTest(unittest.TestCase):
    def setUp(self):
        missing = [t for t in ("ip", "unshare") if not shutil.which(t)]
        self.assertFalse(missing, f"pod emulation needs {missing} (iproute2, util-linux)")
        self.assertEqual(os.geteuid(), 0, "pod emulation needs root for ip netns and unshare "
                         "(CI runs as root); run: sudo ctest -R k8s.pod_emulation")
        probe = sh("ip", "netns", "add", f"ddpk8s-probe{os.getpid()}", check=False)
        sh("ip", "netns", "del", f"ddpk8s-probe{os.getpid()}", check=False)
        self.assertEqual(probe.returncode, 0, f"cannot create a network namespace: {probe.stderr}")

    def workspace(self) -> tuple[pathlib.Path, pathlib.Path]:
        """A fresh directory with the short ddptrain config, and in it the checkpoint volume
        (the PersistentVolumeClaim, shared by every pod). Removed after the test, pass or fail."""
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-pods-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        volume = tmp / "checkpoints"
        volume.mkdir()
        short_config(tmp / "ddptrain.yaml", "/usr/share/datasets/fashion-mnist")
        return tmp, volume

    def start_pods(self, cluster: Cluster, pods, tmp: pathlib.Path, volume: pathlib.Path, attempt: int) -> dict:
        """Starts every pod's container command (workers first), as the operator does."""
        procs = {}
        for pod in reversed(pods):
            paths = {k8s_jobs.IMAGE_DDPRUN: DDPRUN, k8s_jobs.IMAGE_DDPTRAIN: DDPTRAIN,
                     k8s_jobs.IMAGE_CONFIG: str(tmp / "ddptrain.yaml"),
                     k8s_jobs.IMAGE_CHECKPOINT_DIR: str(volume),
                     "/dev/termination-log": str(tmp / f"{pod.name}.{attempt}.termination-log")}
            command = k8s_jobs.map_paths(pod.argv, paths)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
            env.update(pod.env)
            log = open(tmp / f"{pod.name}.{attempt}.log", "w")
            procs[pod.name] = (subprocess.Popen(cluster.argv(pod, command), env=env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True), log)
            print(f"attempt {attempt}: started {pod.name} at {cluster.ip[pod.name]} in {cluster.ns[pod.name]}: "
                  f"RANK={pod.env['RANK']} WORLD_SIZE={pod.env['WORLD_SIZE']} "
                  f"MASTER={pod.env['MASTER_ADDR']}:{pod.env['MASTER_PORT']}", flush=True)
            if pod.role == "worker":
                time.sleep(1)
        return procs

    def wait_pods(self, procs: dict, tmp: pathlib.Path, attempt: int, on_tick=None):
        t0 = time.monotonic()
        codes = {}
        try:
            while len(codes) < len(procs) and time.monotonic() - t0 < TIMEOUT:
                for pod_name, (p, _) in procs.items():
                    if pod_name not in codes and p.poll() is not None:
                        codes[pod_name] = p.returncode
                if on_tick:
                    on_tick()
                time.sleep(0.5)
        finally:
            for pod_name, (p, log) in procs.items():
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                log.close()
        logs = {n: (tmp / f"{n}.{attempt}.log").read_text() for n in procs}
        report = "\n".join(f"--- {n} (exit {codes.get(n, 'killed at the timeout')})\n" +
                           "\n".join(text.splitlines()[-25:]) for n, text in logs.items())
        print(f"attempt {attempt} finished in {time.monotonic() - t0:.1f} s: {codes}", flush=True)
        return codes, logs, report

    def test_cpu_pytorchjob_trains_checkpoints_and_resumes_after_eviction(self):
        """Attempt 0: the master pod is evicted (SIGTERM) at step >= 10; it checkpoints
        and every pod exits with a retryable code (>= 128: restartPolicy ExitCode has the
        operator recreate them). Attempt 1: the recreated pods resume from that checkpoint
        on the shared volume and train to the end; the master writes the final one."""
        job = k8s_jobs.load_job(REPO, "pytorchjob-cpu.yaml")
        name = job["metadata"]["name"]
        pods = k8s_jobs.pytorchjob_pods(job)
        master = f"{name}-master-0"
        self.assertGreaterEqual(len(pods), 3, "the manifest's job has a master and >= 2 workers")
        self.assertTrue(all(s["restartPolicy"] == "ExitCode" for s in job["spec"]["pytorchReplicaSpecs"].values()))
        tmp, volume = self.workspace()
        ckpt_dir = volume / name
        with Cluster(pods) as cluster:
            procs = self.start_pods(cluster, pods, tmp, volume, 0)
            evicted = []

            def evict_master_after_step_10():
                if not evicted and "step=10/" in (tmp / f"{master}.0.log").read_text():
                    os.killpg(procs[master][0].pid, signal.SIGTERM)  # the kubelet's SIGTERM
                    evicted.append(time.monotonic())
                    print("attempt 0: SIGTERM to the master pod after step 10", flush=True)

            codes, logs, report = self.wait_pods(procs, tmp, 0, evict_master_after_step_10)
            self.assertTrue(evicted, report)
            self.assertEqual(codes[master], 143, report)
            for pod in pods:
                self.assertGreaterEqual(codes[pod.name], 128, f"{pod.name} must exit retryable\n{report}")
            saved = sorted(f.name for f in ckpt_dir.iterdir() if f.name.endswith(".pt"))
            print(f"after the eviction: {saved}")
            self.assertEqual(len(saved), 1, report)
            interrupted_at = int(saved[0][len("checkpoint-"):-len(".pt")])
            self.assertTrue(10 <= interrupted_at < STEPS, saved)

            # The operator recreates the pods (same names, same env); they resume.
            procs = self.start_pods(cluster, pods, tmp, volume, 1)
            codes, logs, report = self.wait_pods(procs, tmp, 1)
        self.assertEqual(codes, {p.name: 0 for p in pods}, report)
        master_log = logs[master]
        print("\n".join(master_log.splitlines()[-6:]))
        self.assertIn(f"from_step={interrupted_at}", master_log, report)
        self.assertRegex(master_log, rf"world_size={len(pods)}\b", report)
        # The master (rank 0) wrote the final checkpoint and its manifest on the volume.
        files = sorted(f.name for f in ckpt_dir.iterdir())
        print(f"{ckpt_dir}: {files}")
        self.assertIn(f"checkpoint-{STEPS:08d}.pt", files, report)
        manifest = json.loads((ckpt_dir / f"checkpoint-{STEPS:08d}.pt.json").read_text())
        self.assertEqual(manifest["step"], STEPS, manifest)
        self.assertEqual(manifest["bytes"], (ckpt_dir / f"checkpoint-{STEPS:08d}.pt").stat().st_size)

    def test_lost_worker_makes_every_pod_exit_retryable(self):
        """A worker pod dies at once (SIGKILL: OOM kill, node loss) after step 10. The
        master and the other workers must notice the lost peer and exit with a code
        restartPolicy ExitCode retries (>= 128; ddprun's 200), not hang and not exit
        with a permanent code."""
        job = k8s_jobs.load_job(REPO, "pytorchjob-cpu.yaml")
        name = job["metadata"]["name"]
        pods = k8s_jobs.pytorchjob_pods(job)
        master, victim = f"{name}-master-0", pods[-1].name
        tmp, volume = self.workspace()
        with Cluster(pods) as cluster:
            procs = self.start_pods(cluster, pods, tmp, volume, 0)
            killed = []

            def kill_a_worker_after_step_10():
                if not killed and "step=10/" in (tmp / f"{master}.0.log").read_text():
                    os.killpg(procs[victim][0].pid, signal.SIGKILL)
                    killed.append(time.monotonic())
                    print(f"SIGKILL to {victim} after step 10", flush=True)

            codes, logs, report = self.wait_pods(procs, tmp, 0, kill_a_worker_after_step_10)
        self.assertTrue(killed, report)
        self.assertEqual(len(codes), len(pods), f"a pod hung after losing its peer\n{report}")
        self.assertEqual(codes[victim], -signal.SIGKILL, report)  # the kubelet reports 137
        for pod in pods:
            if pod.name != victim:
                self.assertGreaterEqual(codes[pod.name], 128, f"{pod.name} must exit retryable\n{report}")
        print({n: c for n, c in codes.items() if n != victim})


if __name__ == "__main__":
    unittest.main(verbosity=2)
