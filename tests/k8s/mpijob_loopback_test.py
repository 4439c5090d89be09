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
    def test_launcher_command_trains_and_checkpoints(self):
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        name = job["metadata"]["name"]
        launcher, cluster_hostfile = k8s_jobs.mpijob_launcher(job)
        ranks = int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]) * int(job["spec"]["slotsPerWorker"])
        self.assertEqual(k8s_jobs.mpirun_option(launcher.argv, "--hostfile"), [k8s_jobs.MPI_HOSTFILE])
        self.assertEqual(k8s_jobs.mpirun_option(launcher.argv, "-np") + k8s_jobs.mpirun_option(launcher.argv, "-n"),
                         [], "no -np: the hostfile's slots decide the number of ranks")
        self.assertEqual(len(cluster_hostfile.splitlines()), int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]))

        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-mpijob-"))
        (tmp / "hostfile").write_text(f"localhost slots={ranks}\n")
        config = yaml.safe_load((REPO / "docker/ddptrain.yaml").read_text())
        config.update({"data-dir": "/usr/share/datasets/fashion-mnist", "max-steps": STEPS, "log-every": 10,
                       "eval-batch-size": 2000})
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
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
