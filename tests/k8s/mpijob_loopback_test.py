"""Runs the MPIJob's launcher command (k8s/mpijob.yaml) on this machine and checks that
the job trains to completion and that rank 0 writes its checkpoint.

The launcher container's own command and args are used, with:
- the environment mpi-operator gives the launcher (OMPI_MCA_*, K_MPI_JOB_ROLE, ...)
  plus the container's env, which mpirun forwards to the ranks with -x;
- /etc/mpi/hostfile (the operator's ConfigMap) replaced by a hostfile naming this
  machine with as many slots as the job's workers x slotsPerWorker (no SSH here), and
  `--oversubscribe` added after mpirun since those slots may exceed the cores;
- the image's paths mapped to the build tree, the checkpoint volume to a temporary
  directory and the config to the image's with a short schedule (30 steps).
No MASTER_ADDR is given: ddptrain's ranks find rank 0 through MPI, as in the cluster.
As root, Open MPI needs OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM); the image runs as uid 1000.

Usage: mpijob_loopback_test.py REPO_DIR DDPTRAIN MPIRUN
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

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")
MPIRUN = sys.argv.pop(1) if len(sys.argv) > 1 else (shutil.which("mpirun") or "mpirun")
STEPS = 30


class MpiJobLoopbackTest(unittest.TestCase):
    def run_setup(self, config_changes: dict) -> tuple[list[str], dict, pathlib.Path, str, int]:
        """The launcher's command and env mapped to this machine: (argv, env, checkpoint
        volume, job name, ranks)."""
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        name = job["metadata"]["name"]
        launcher, cluster_hostfile = k8s_jobs.mpijob_launcher(job)
        ranks = int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]) * int(job["spec"]["slotsPerWorker"])
        self.assertEqual(k8s_jobs.mpirun_option(launcher.argv, "--hostfile"), [k8s_jobs.MPI_HOSTFILE])
        self.assertEqual(k8s_jobs.mpirun_option(launcher.argv, "-np") + k8s_jobs.mpirun_option(launcher.argv, "-n"),
                         [], "no -np: the hostfile's slots decide the number of ranks")
        self.assertEqual(len(cluster_hostfile.splitlines()), int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]))

        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-mpijob-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        (tmp / "hostfile").write_text(f"localhost slots={ranks}\n")
        config = yaml.safe_load((REPO / "docker/ddptrain.yaml").read_text())
        config.update({"data-dir": "/usr/share/datasets/fashion-mnist", "eval-batch-size": 2000})
        config.update(config_changes)
        (tmp / "ddptrain.yaml").write_text(yaml.safe_dump(config))
        volume = tmp / "checkpoints"
        volume.mkdir()
        paths = {"mpirun": MPIRUN, k8s_jobs.MPI_HOSTFILE: str(tmp / "hostfile"),
                 k8s_jobs.IMAGE_DDPTRAIN: DDPTRAIN, k8s_jobs.IMAGE_CONFIG: str(tmp / "ddptrain.yaml"),
                 k8s_jobs.IMAGE_CHECKPOINT_DIR: str(volume)}
        argv = k8s_jobs.map_paths(launcher.argv, paths)
        argv = argv[:1] + ["--oversubscribe"] + argv[1:]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp), "LANG": "C.UTF-8"}
        env.update({k: k8s_jobs.map_paths([v], paths)[0] for k, v in launcher.env.items()})
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        print(" ".join(argv), flush=True)
        return argv, env, volume, name, ranks

    def test_launcher_command_trains_and_checkpoints(self):
        argv, env, volume, name, ranks = self.run_setup({"max-steps": STEPS, "log-every": 10})
        t0 = time.monotonic()
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        print(f"mpirun exited {out.returncode} after {time.monotonic() - t0:.1f} s")
        log = out.stdout + out.stderr
        print("\n".join(log.splitlines()[-6:]))
        self.assertEqual(out.returncode, 0, log[-4000:])
        self.assertIn("event=group_ready backend=gloo world_size=2", log)
        # No MASTER_ADDR anywhere: every rank learnt rank 0's store address through MPI.
        self.assertIn("master=<mpi-bootstrap>", log)
        self.assertEqual(log.count("event=mpi_bootstrap master="), ranks, log[-4000:])
        ckpt = volume / name / f"checkpoint-{STEPS:08d}.pt"
        self.assertTrue(ckpt.exists(), sorted(p.name for p in (volume / name).iterdir()))
        manifest = json.loads(ckpt.with_name(ckpt.name + ".json").read_text())
        self.assertEqual((manifest["step"], manifest["bytes"]), (STEPS, ckpt.stat().st_size))

    def test_sigterm_to_mpirun_leaves_rank_zeros_checkpoint(self):
        """A deleted launcher pod: SIGTERM to mpirun mid-run. Open MPI 4.1 sends the ranks
        SIGCONT, waits odls_base_sigkill_timeout, sends SIGTERM, waits as long, then
        SIGKILL; the ranks stop one step after SIGTERM (Note [Stopping on a signal]) and
        rank 0 writes a checkpoint. The default timeout, 1 s, cut that off. The manifest's
        value must leave time for it and fit twice in the grace period; here it runs at 5 s,
        to be quick, with steps of about half a second."""
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        launcher_spec = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
        argv_in_manifest = launcher_spec["containers"][0]["command"] + launcher_spec["containers"][0]["args"]
        options, _ = k8s_jobs.split_mpirun(argv_in_manifest)
        mca = {options[i + 1]: options[i + 2] for i, a in enumerate(options) if a == "--mca"}
        timeout = int(mca.get("odls_base_sigkill_timeout", "1"))
        self.assertGreaterEqual(timeout, 10, "rank 0 needs time to finish its step and checkpoint")
        self.assertLessEqual(2 * timeout + 30, int(launcher_spec["terminationGracePeriodSeconds"]),
                             "mpirun must end inside the pod's grace period")

        argv, env, volume, name, _ = self.run_setup(
            {"max-steps": 100000, "batch-size": 512, "log-every": 1, "checkpoint-every": 100000})
        at = argv.index("odls_base_sigkill_timeout")
        argv[at + 1] = "5"
        log_path = volume.parent / "mpirun.log"
        with open(log_path, "w") as log_file:
            mpirun = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "step=2/" not in log_path.read_text() and time.monotonic() < deadline:
                self.assertIsNone(mpirun.poll(), log_path.read_text()[-4000:])
                time.sleep(0.2)
            self.assertIn("step=2/", log_path.read_text())
            mpirun.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            mpirun.wait(timeout=120)
            print(f"mpirun exited {mpirun.returncode} {time.monotonic() - t0:.1f} s after SIGTERM")
        finally:
            if mpirun.poll() is None:
                mpirun.kill()
                mpirun.wait()
        log = log_path.read_text()
        print("\n".join(log.splitlines()[-8:]))
        self.assertIn("event=stopping", log)
        saved = sorted((volume / name).glob("checkpoint-*.pt"))
        self.assertTrue(saved, f"no checkpoint after SIGTERM: {log[-4000:]}")
        manifest = json.loads(saved[-1].with_name(saved[-1].name + ".json").read_text())
        self.assertGreaterEqual(manifest["step"], 2)
        self.assertEqual(manifest["bytes"], saved[-1].stat().st_size)
        left = subprocess.run(["pgrep", "-f", str(volume)], capture_output=True, text=True).stdout.split()
        self.assertEqual(left, [], "processes left behind")


if __name__ == "__main__":
    unittest.main(verbosity=2)
