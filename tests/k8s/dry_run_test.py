"""Each replica of each manifest, given the environment its operator injects
(../shared/k8s-env-contract.md, built by k8s_jobs.py), runs the manifest's own command
and args through `ddprun --dry-run`; the plans of all replicas together must form one
job: global ranks 0..N-1 each exactly once, one world size (the one the manifest asks
for), one master address and port, each pod's node rank once.

- PyTorchJob: every pod (Master, Worker-i) with MASTER_*, WORLD_SIZE, RANK and PET_*.
- TrainJob: every node pod with PET_* only (Trainer sets nothing else).
- MPIJob: mpirun starts ddptrain directly; each rank's environment is what mpirun gives
  it (OMPI_COMM_WORLD_*, the -x variables of the launcher). Without a MASTER_ADDR,
  `ddprun --dry-run` refuses (exit 2) and points at starting the program under mpirun,
  which is what the manifest does (ddptrain then finds rank 0 through MPI; see
  mpijob_loopback_test.py). With the first host of the hostfile forwarded as
  MASTER_ADDR, the ranks' plans (MPI rank = node rank, one process each) form one job.
Also: ddptrain accepts each manifest's training arguments (`--print-config`).

Usage: dry_run_test.py REPO_DIR DDPRUN DDPTRAIN
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPRUN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/launcher/ddprun")
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")

PATHS = {
    k8s_jobs.IMAGE_DDPRUN: DDPRUN,
    k8s_jobs.IMAGE_DDPTRAIN: DDPTRAIN,
    k8s_jobs.IMAGE_CONFIG: str(REPO / "docker/ddptrain.yaml"),
}


def clean_env(extra: dict) -> dict:
    """A container's environment: nothing of this test's own (no RANK, no OMPI_*)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def dry_run(argv: list[str], env: dict) -> dict:
    argv = k8s_jobs.map_paths(argv, PATHS)
    assert os.path.basename(argv[0]) == "ddprun", argv
    cmd = [argv[0], "--dry-run"] + argv[1:]
    out = subprocess.run(cmd, env=clean_env(env), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}\nenv: {env}\n"
                             f"stdout: {out.stdout}\nstderr: {out.stderr}")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"ddprun --dry-run printed no single JSON object ({e}):\n{out.stdout}")


class DryRunPlanTest(unittest.TestCase):
    def check_job(self, plans: list[dict], world: int, nnodes: int, nproc: int, master: tuple, source: str,
                  program: list[str]):
        ranks = []
        for node_rank, plan in enumerate(plans):
            with self.subTest(node=node_rank):
                self.assertEqual(plan["source"], source)
                self.assertEqual(plan["nnodes"], nnodes)
                self.assertEqual(plan["nodeRank"], node_rank)
                self.assertEqual(plan["nprocPerNode"], nproc)
                self.assertEqual(plan["worldSize"], world)
                self.assertEqual(plan["masterAddr"], master[0])
                if master[1] is not None:
                    self.assertEqual(plan["masterPort"], master[1])
                self.assertEqual(plan["program"], k8s_jobs.map_paths(program, PATHS))
                self.assertEqual(len(plan["workers"]), nproc)
                for local, w in enumerate(plan["workers"]):
                    env = w["env"]
                    self.assertEqual(w["localRank"], local)
                    self.assertEqual(env["RANK"], str(w["rank"]))
                    self.assertEqual(env["LOCAL_RANK"], str(local))
                    self.assertEqual(env["WORLD_SIZE"], str(world))
                    self.assertEqual(env["LOCAL_WORLD_SIZE"], str(nproc))
                    self.assertEqual(env["GROUP_RANK"], str(node_rank))
                    if master[0]:
                        self.assertEqual(env["MASTER_ADDR"], master[0])
                        self.assertEqual(env["MASTER_PORT"], str(master[1]))
                    ranks.append(w["rank"])
        self.assertEqual(sorted(ranks), list(range(world)), "each rank 0..N-1 exactly once")
        self.assertEqual(len({(p["masterAddr"], p["masterPort"]) for p in plans}), 1, "one master")
        self.assertEqual(len({p["worldSize"] for p in plans}), 1, "one world size")
        print(f"{len(plans)} nodes x {nproc} = ranks {sorted(ranks)}, master {master[0] or '(MPI)'}:{master[1]}")

    def test_pytorchjobs(self):
        for name in ("pytorchjob-cpu.yaml", "pytorchjob-gpu.yaml"):
            with self.subTest(manifest=name):
                job = k8s_jobs.load_job(REPO, name)
                pods = k8s_jobs.pytorchjob_pods(job)
                nproc = int(job["spec"]["nprocPerNode"])
                plans = [dry_run(p.argv, p.env) for p in pods]
                port = pods[0].operator_env["MASTER_PORT"]
                self.check_job(plans, world=len(pods) * nproc, nnodes=len(pods), nproc=nproc,
                               master=(f"{job['metadata']['name']}-master-0", int(port)), source="pytorchjob",
                               program=k8s_jobs.split_ddprun(pods[0].argv)[1])
                self.assertEqual(plans[0]["maxRestarts"], 0)

    def test_elastic_pytorchjob(self):
        """Every pod plans the same c10d rendezvous (endpoint worker-0, MIN:MAX, the id, the
        restart budget); node ranks, WORLD_SIZE and the master come from each round."""
        job = k8s_jobs.load_job(REPO, "pytorchjob-elastic.yaml")
        policy = job["spec"]["elasticPolicy"]
        pods = k8s_jobs.pytorchjob_pods(job)
        self.assertNotIn("RANK", pods[0].env)
        plans = [dry_run(p.argv, p.env) for p in pods]
        name = job["metadata"]["name"]
        expected = {"backend": "c10d", "endpoint": f"{name}-worker-0:23456", "runId": policy["rdzvId"],
                    "minNodes": policy["minReplicas"], "maxNodes": policy["maxReplicas"]}
        for plan in plans:
            self.assertEqual(plan["rendezvous"], expected)
            self.assertEqual(plan["source"], "trainer-v2")  # PET_* only, as Trainer v2 gives
            self.assertEqual(plan["origins"]["nodeRank"], "rendezvous")
            self.assertEqual(plan["maxRestarts"], policy["maxRestarts"])
            self.assertEqual(plan["nprocPerNode"], int(job["spec"]["nprocPerNode"]))
            env = plan["workers"][0]["env"]
            self.assertEqual(env["TORCHELASTIC_RUN_ID"], policy["rdzvId"])
            self.assertEqual(env["WORLD_SIZE"], "<assigned by each rendezvous round>")
        print(f"{len(plans)} pods plan the rendezvous {expected}")

    def test_trainjob(self):
        job = k8s_jobs.load_job(REPO, "trainjob.yaml")
        pods = k8s_jobs.trainjob_pods(job)
        nproc = job["spec"]["trainer"]["numProcPerNode"]
        plans = [dry_run(p.argv, p.env) for p in pods]
        name = job["metadata"]["name"]
        self.check_job(plans, world=len(pods) * nproc, nnodes=len(pods), nproc=nproc,
                       master=(f"{name}-node-0-0.{name}", k8s_jobs.TRAINER_MASTER_PORT), source="trainer-v2",
                       program=k8s_jobs.split_ddprun(pods[0].argv)[1])

    def test_mpijob(self):
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        name = job["metadata"]["name"]
        launcher, hostfile = k8s_jobs.mpijob_launcher(job)
        _, program = k8s_jobs.split_mpirun(launcher.argv)
        envs = k8s_jobs.mpijob_rank_envs(job)
        # The manifest has mpirun start ddptrain itself: without MASTER_ADDR, ranks find
        # rank 0 through MPI (tests/k8s/mpijob_loopback_test.py runs that). ddprun in its
        # place would have no master address, and says so.
        self.assertEqual(program[0], k8s_jobs.IMAGE_DDPTRAIN)
        out = subprocess.run([DDPRUN, "--dry-run", "--"] + k8s_jobs.map_paths(program, PATHS),
                             env=clean_env(envs[1]), capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 2, out.stdout + out.stderr)
        self.assertIn("MASTER_ADDR", out.stderr)
        self.assertIn("mpirun", out.stderr)
        # The ranks mpirun makes of the hostfile, as the resolver reads them: with the first
        # host forwarded as MASTER_ADDR (mpirun -x MASTER_ADDR=...), one node per rank,
        # ranks 0..N-1 once.
        first_host = hostfile.split()[0]
        self.assertEqual(first_host, f"{name}-worker-0.{name}.default.svc")
        plans = [dry_run([k8s_jobs.IMAGE_DDPRUN, "--"] + program,
                         dict(env, MASTER_ADDR=first_host, MASTER_PORT="29500")) for env in envs]
        self.check_job(plans, world=len(envs), nnodes=len(envs), nproc=1, master=(first_host, 29500),
                       source="openmpi", program=program)

    def test_ddptrain_accepts_each_manifests_arguments(self):
        jobs = [(n, k8s_jobs.load_job(REPO, n)) for n in k8s_jobs.JOB_FILES]
        for name, job in jobs:
            if job["kind"] == "MPIJob":
                program = k8s_jobs.split_mpirun(k8s_jobs.mpijob_launcher(job)[0].argv)[1]
            else:
                pods = k8s_jobs.pytorchjob_pods(job) if job["kind"] == "PyTorchJob" else k8s_jobs.trainjob_pods(job)
                program = k8s_jobs.split_ddprun(pods[0].argv)[1]
            with self.subTest(manifest=name):
                argv = k8s_jobs.map_paths(program, PATHS) + ["--print-config"]
                out = subprocess.run(argv, env=clean_env({}), capture_output=True, text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertRegex(out.stdout, rf"(?m)^checkpoint-dir: \"?/checkpoints/{job['metadata']['name']}\"?$")
                self.assertRegex(out.stdout, r"(?m)^data-path: \"?/data/fashion-mnist\"?$")
        # and a wrong argument is refused with the usage exit code
        out = subprocess.run([DDPTRAIN, "--config", PATHS[k8s_jobs.IMAGE_CONFIG], "--backend", "mpi",
                              "--print-config"], env=clean_env({}), capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 2, out.stdout + out.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
