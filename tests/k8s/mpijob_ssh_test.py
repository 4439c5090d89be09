"""Runs the MPIJob (k8s/mpijob.yaml) as on a cluster: a launcher pod and two worker pods,
mpirun on the launcher starting the ranks on the workers over real SSH, and checks that the
2 ranks train to completion and that rank 0 writes its checkpoint on the shared volume.

What mpi-operator (github.com/kubeflow/mpi-operator, pkg/controller/mpi_job_controller.go at
commit caa3c47fc42eb762635f78045ec0fcd1a89eb038; lines cited as :N) does, and how it is
emulated here:
- Pods: <job>-launcher (its pod's hostname, :1586, :1603) and <job>-worker-<i> (:1479-1480,
  :1512), all with the job's name as subdomain (:1513, :1604), that of the headless Service
  <job> (:1410-1436). Each pod is an emulated host (tests/support/netns_hosts.py): its own
  network namespace on a bridge that lives in a namespace of its own, addresses in
  198.18.<n>.0/24 only inside those namespaces, its pod name as host name, and the
  Service's names (<pod>.<job>.default.svc[.cluster.local]) in /etc/netns/<ns>/hosts.
- The SSH auth Secret <job>-ssh (:1440-1476): an ECDSA P-521 key, the private key in SEC1
  PEM ("EC PRIVATE KEY") under ssh-privatekey, the public key in authorized_keys format
  under ssh-publickey; mounted on every pod (:1533, :1636) at the job's sshAuthMountPath as
  id_rsa, id_rsa.pub and authorized_keys (sshVolumeItems, :142-155) with the default
  mode 0644 (a mode is set only for /root/.ssh, :1795-1797), group fsGroup, read-only.
  The key is made with ssh-keygen in that format.
- The ConfigMap <job>-config, mounted on the launcher only at /etc/mpi (:1647-1662): the
  hostfile `<job>-worker-<i>.<job>.<namespace>.svc slots=<slotsPerWorker>` (:1335-1363;
  k8s_jobs.mpijob_launcher), mode 0444. Its discover_hosts.sh (for elastic Horovod) is left out.
- The launcher's env: the container's, then K_MPI_JOB_ROLE=launcher (:169-174, :1611),
  OMPI_MCA_orte_keep_fqdn_hostnames, OMPI_MCA_orte_default_hostfile and
  OMPI_MCA_plm_rsh_args="-o ConnectionAttempts=10" (:181-194, :1615),
  OMPI_MCA_orte_set_default_slots (:117, :1616-1619), NVIDIA_VISIBLE_DEVICES and
  NVIDIA_DRIVER_CAPABILITIES empty (:216-219, :1629-1635). The workers': the container's,
  then K_MPI_JOB_ROLE=worker (:175-180, :1532).
  The port, 2222, is not in the operator's rsh args: it comes from the image's
  /etc/ssh/ssh_config (docker/Dockerfile.cuda sets Port 2222, StrictHostKeyChecking no and
  UserKnownHostsFile /dev/null there); the pods get the host's ssh_config edited by the
  Dockerfile's own commands.
- The launcher starts when every worker is Ready (launcherCreationPolicy
  WaitForWorkersReady, :678, countReadyWorkerPods :860-870): here, when a TCP connection
  to each worker's port 2222 succeeds (the manifest's readinessProbe; sshd logs each probe
  as "kex_exchange_identification: Connection closed").

Each pod has its own file-system view, like the image (docker/Dockerfile.cuda), built in
its own mount namespace and entered with chroot: the host's top-level directories bound
in, except /etc (an overlay of the host's /etc: the image's /etc/passwd entry of the user
ddprun, uid 1000, is written there, so no user is added to this machine; the image's
ssh_config; /etc/ddprun/ddptrain.yaml; /etc/hosts of the pod's network namespace),
/home (ddprun's home: .sshd_config = docker/sshd_config, .ssh = the Secret), /opt
(/opt/ddprun/bin/{ddprun,ddptrain} of the build tree), /root, /tmp, /run (each pod's
own), /data/fashion-mnist (Debian's /usr/share/datasets/fashion-mnist), and the pod
template's volumeMounts (/checkpoints: one directory shared by all pods, the
PersistentVolumeClaim; /dev/shm: a tmpfs, the Memory emptyDir). Processes run as uid and
gid 1000 with group 1000 (runAsUser, runAsGroup, fsGroup) in /home/ddprun (WORKDIR), with
only the env a container gets.

Deviations from the image and the cluster, each because it must:
- ddptrain of the build tree has its torch libraries in the venv under /root (mode 700 on
  this machine) and its runtime library in the build tree, where its RUNPATH points (the
  image has them under /opt/ddprun/lib): each pod's /root is a tmpfs (mode 755) with the
  venv bound back at its path; the build tree is reachable at its path like the rest of
  the host's top-level directories, and where it lies under a directory each pod has of
  its own (a CI clone under /tmp), the library directories its RUNPATH names are bound
  back at their paths.
- /usr, /lib, /bin, ... are the host's (Debian 12, the image's base, with the same Open
  MPI and OpenSSH packages) rather than the image's.
- The config is the image's with a short schedule (30 steps) and eval-batch-size 2000;
  the manifest's command and args are otherwise run as they are, read from the YAML.
- No Kubernetes service-link variables (KUBERNETES_SERVICE_HOST, ...) in the env.
Nothing falls back to a local launch: the hostfile names only the workers, and the
launcher pod has no checkpoint volume, so the checkpoint can only come from a rank on a
worker; the workers' sshd logs must show the publickey logins of ddprun. A second test
puts another key in the workers' authorized_keys: mpirun must then fail and start no rank.

Needs root (ip netns, unshare, mount, chroot), OpenSSH's server and client (Debian's
openssh-server, openssh-client) and Open MPI; CI runs as root. Everything it creates
(namespaces, /etc/netns entries, processes, the temporary directory) is removed after
the test, pass or fail.

Usage: mpijob_ssh_test.py REPO_DIR DDPRUN DDPTRAIN
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Callable

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from netns_hosts import NetnsHosts, netns_problem, sh  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPRUN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/launcher/ddprun")
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")
STEPS = 30
NAMESPACE = "default"
SSH_PORT = 2222
READY_TIMEOUT = 30   # seconds for every worker's sshd to accept
JOB_TIMEOUT = 300    # seconds for mpirun
# The image's ENV PATH (docker/Dockerfile.cuda: /opt/ddprun/bin before the base image's PATH)
# and WORKDIR.
IMAGE_PATH = "/opt/ddprun/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_WORKDIR = k8s_jobs.IMAGE_USER_HOME
IMAGE_DATA = "/data/fashion-mnist"

# Run as root in the pod's network, UTS and mount namespaces: builds the pod's root in
# $1/rootfs (see the module docstring), binds what $1/binds lists ("SOURCE TARGET ro|rw",
# one a line), mounts a tmpfs on each path $1/tmpfs lists, and runs the rest of the command
# line in it as uid 1000. `unshare --mount` makes every mount private to the pod.
POD_SH = r"""
set -eu
pod=$1; shift
r=$pod/rootfs
mount -t tmpfs -o mode=755 pod-root "$r"
for e in /*; do
  n=${e#/}
  case $n in etc|home|opt|root|tmp|run) continue ;; esac
  if [ -L "$e" ]; then cp -P "$e" "$r/$n"
  elif [ -d "$e" ]; then mkdir "$r/$n" && mount --rbind "$e" "$r/$n"
  fi
done
mkdir "$r/etc" "$r/home" "$r/opt" "$r/root" "$r/tmp" "$r/run"
mount -t overlay pod-etc -o "lowerdir=/etc,upperdir=$pod/etc,workdir=$pod/etc-work" "$r/etc"
mount --bind /etc/hosts "$r/etc/hosts"
for d in home opt root run; do mount -t tmpfs -o mode=755 "pod-$d" "$r/$d"; done
mount -t tmpfs -o mode=1777 pod-tmp "$r/tmp"
while read -r src dst mode; do
  if [ -d "$src" ]; then mkdir -p "$r$dst"; else mkdir -p "$(dirname "$r$dst")"; touch "$r$dst"; fi
  mount --rbind "$src" "$r$dst"
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$r$dst"; fi
done < "$pod/binds"
while read -r dst; do mount -t tmpfs -o mode=1777 pod-emptydir "$r$dst"; done < "$pod/tmpfs"
exec chroot "$r" setpriv --reuid=1000 --regid=1000 --groups=1000 -- "$@"
"""


def runpath(binary: str) -> list[pathlib.Path]:
    """The directories of the binary's RUNPATH (or RPATH)."""
    dynamic = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    return [pathlib.Path(d) for entry in re.findall(r"R(?:UN)?PATH\)\s+Library r(?:un)?path: \[(.*)\]", dynamic)
            for d in entry.split(":") if d]


def venvs_in_runpath(binary: str) -> list[str]:
    """The virtual environments (directories with a pyvenv.cfg) that the binary's RUNPATH
    points into: the torch libraries of the build tree's ddptrain."""
    found = set()
    for p in runpath(binary):
        while p != p.parent and not (p / "pyvenv.cfg").exists():
            p = p.parent
        if p != p.parent:
            found.add(str(p))
    return sorted(found)


# The top-level directories each pod has of its own (POD_SH): a build tree under one of
# them (a CI clone under /tmp) must be bound back for the binaries to find their libraries.
POD_PRIVATE_TOPS = {"etc", "home", "opt", "root", "tmp", "run"}


def build_tree_library_dirs(*binaries: str) -> list[str]:
    """The RUNPATH directories of `binaries` that exist and that a pod's own /tmp, /home,
    ... would hide (the venv under /root is bound whole, venvs_in_runpath)."""
    found = set()
    for binary in binaries:
        for d in runpath(binary):
            if d.is_absolute() and len(d.parts) > 1 and d.parts[1] in POD_PRIVATE_TOPS \
                    and d.parts[1] != "root" and d.is_dir():
                found.add(str(d))
    return sorted(found)


def image_ssh_config(path: pathlib.Path) -> None:
    """This machine's /etc/ssh/ssh_config edited by the image's own commands (the lines of
    docker/Dockerfile.cuda that edit /etc/ssh/ssh_config), written to `path`."""
    shutil.copy("/etc/ssh/ssh_config", path)
    dockerfile = (REPO / "docker/Dockerfile.cuda").read_text()
    edits = re.findall(r"^\s*(?:RUN |&& )((?:sed -i|echo) .*/etc/ssh/ssh_config)\s*\\?$", dockerfile, re.M)
    assert len(edits) >= 3, f"the Dockerfile's ssh_config edits not found: {edits}"
    for edit in edits:
        subprocess.run(["sh", "-c", edit.replace("/etc/ssh/ssh_config", str(path))], check=True)


def ssh_secret() -> dict[str, bytes]:
    """A new SSH auth Secret as the operator makes it (:1440-1476): ECDSA P-521, SEC1 PEM
    private key under ssh-privatekey, authorized_keys line (no comment) under ssh-publickey."""
    with tempfile.TemporaryDirectory(prefix="ddprun-mpijob-ssh-key-") as tmp:
        key = pathlib.Path(tmp, "key")
        sh("ssh-keygen", "-q", "-t", "ecdsa", "-b", "521", "-m", "PEM", "-N", "", "-C", "", "-f", str(key))
        private = key.read_bytes()
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    assert private.startswith(b"-----BEGIN EC PRIVATE KEY-----"), private[:40]
    return {"ssh-privatekey": private, "ssh-publickey": f"{kind} {blob}\n".encode()}


def passwd_with_ddprun(etc: pathlib.Path) -> None:
    """The image's `useradd --uid 1000 --user-group --create-home --shell /bin/bash
    ddprun`, in the pod's /etc (the overlay's upper layer), not on this machine."""
    uid = str(k8s_jobs.IMAGE_UID)
    for name, line in (("passwd", f"ddprun:x:{uid}:{uid}::{k8s_jobs.IMAGE_USER_HOME}:/bin/bash\n"),
                       ("group", f"ddprun:x:{uid}:\n")):
        kept = [entry for entry in pathlib.Path("/etc", name).read_text().splitlines(keepends=True)
                if entry.split(":")[0] != "ddprun" and entry.split(":")[2:3] != [uid]]
        (etc / name).write_text("".join(kept) + line)


class Pod:
    """One pod's files: rootfs mount point, /etc overlay layers, home, binds."""

    def __init__(self, tmp: pathlib.Path, spec: k8s_jobs.Pod):
        self.spec = spec
        self.dir = tmp / spec.name
        for d in ("rootfs", "etc", "etc-work", "home"):
            (self.dir / d).mkdir(parents=True)
        self.binds: list[tuple[str, str, str]] = []
        self.tmpfs: list[str] = []
        self.log = self.dir.with_suffix(".log")

    def bind(self, source: pathlib.Path | str, target: str, mode: str = "ro") -> None:
        self.binds.append((str(source), target, mode))

    def write(self) -> None:
        (self.dir / "binds").write_text("".join(f"{s} {t} {m}\n" for s, t, m in self.binds))
        (self.dir / "tmpfs").write_text("".join(f"{t}\n" for t in self.tmpfs))


@dataclasses.dataclass
class Run:
    """One run of the job: its pods, their logs and mpirun's exit code (None: timed out)."""
    job: dict
    name: str
    pods: list[Pod]
    cluster: NetnsHosts
    aliases: Callable[[str], list[str]]
    volume: pathlib.Path
    hostfile: str
    logs: dict[str, str]
    code: int | None
    job_time: float
    t_start: float

    def report(self, lines: int = 30) -> str:
        """The last lines of every pod's log."""
        return "\n".join(f"--- {n}\n" + "\n".join(text.splitlines()[-lines:]) for n, text in self.logs.items())


class MpiJobSshTest(unittest.TestCase):
    def setUp(self):
        problem = netns_problem()
        self.assertEqual(problem, "", problem)
        missing = [t for t in ("/usr/sbin/sshd", "ssh", "ssh-keygen", "mpirun", "orted", "setpriv", "chroot",
                               "readelf") if not shutil.which(t)]
        self.assertFalse(missing, f"needs {missing} (openssh-server, openssh-client, openmpi-bin, util-linux, "
                         "binutils)")

    def make_pods(self, job: dict, tmp: pathlib.Path,
                  authorized_keys: bytes | None) -> tuple[list[Pod], pathlib.Path, str]:
        """Every pod's file system as the operator and the image make it: (pods, launcher
        first; the checkpoint volume; the hostfile). authorized_keys, when given, replaces
        the Secret's public key in the workers' authorized_keys."""
        name = job["metadata"]["name"]
        launcher_spec, hostfile = k8s_jobs.mpijob_launcher(job, NAMESPACE)
        worker_template = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]
        workers = int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"])
        worker_specs = [k8s_jobs.Pod(name, "MPIJob", "worker", i, f"{name}-worker-{i}", f"{name}-worker-{i}",
                                     worker_template["spec"]["containers"][0], {"K_MPI_JOB_ROLE": "worker"},
                                     worker_template) for i in range(workers)]

        secret = ssh_secret()
        # The Secret volume's items (sshVolumeItems, :142-155): file name -> Secret key.
        ssh_items = {"id_rsa": "ssh-privatekey", "id_rsa.pub": "ssh-publickey", "authorized_keys": "ssh-publickey"}
        (tmp / "etc-mpi").mkdir()
        (tmp / "etc-mpi/hostfile").write_text(hostfile)
        (tmp / "etc-mpi/hostfile").chmod(0o444)
        config = yaml.safe_load((REPO / "docker/ddptrain.yaml").read_text())
        self.assertEqual(config["data-dir"], IMAGE_DATA)
        config.update({"max-steps": STEPS, "log-every": 10, "eval-batch-size": 2000})
        (tmp / "ddptrain.yaml").write_text(yaml.safe_dump(config))
        image_ssh_config(tmp / "ssh_config")
        self.assertRegex((tmp / "ssh_config").read_text(), rf"(?m)^\s+Port {SSH_PORT}$")
        volume = tmp / "checkpoints"  # the PersistentVolumeClaim; fsGroup 1000 makes it writable
        volume.mkdir()
        os.chown(volume, k8s_jobs.IMAGE_UID, k8s_jobs.IMAGE_UID)
        venvs = venvs_in_runpath(DDPTRAIN)
        self.assertTrue(venvs, f"no venv in the RUNPATH of {DDPTRAIN}")

        pods = []
        for spec in [launcher_spec] + worker_specs:
            pod = Pod(tmp, spec)
            (pod.dir / "etc/ssh").mkdir()
            shutil.copy(tmp / "ssh_config", pod.dir / "etc/ssh/ssh_config")
            passwd_with_ddprun(pod.dir / "etc")
            home = pod.dir / "home"
            shutil.copy(REPO / "docker/sshd_config", home / ".sshd_config")
            for p in (home, home / ".sshd_config"):
                os.chown(p, k8s_jobs.IMAGE_UID, k8s_jobs.IMAGE_UID)
            # The Secret volume: each pod has its own, read-only, files root:fsGroup 0644.
            ssh_dir = pod.dir / "secret"
            ssh_dir.mkdir()
            for item, key in ssh_items.items():
                broken = authorized_keys is not None and item == "authorized_keys" and spec.role == "worker"
                (ssh_dir / item).write_bytes(authorized_keys if broken else secret[key])
                os.chown(ssh_dir / item, 0, k8s_jobs.IMAGE_UID)
                (ssh_dir / item).chmod(0o644)
            pod.bind(home, k8s_jobs.IMAGE_USER_HOME, "rw")
            pod.bind(ssh_dir, job["spec"]["sshAuthMountPath"])
            pod.bind(DDPRUN, k8s_jobs.IMAGE_DDPRUN)
            pod.bind(DDPTRAIN, k8s_jobs.IMAGE_DDPTRAIN)
            pod.bind(tmp / "ddptrain.yaml", k8s_jobs.IMAGE_CONFIG)
            pod.bind("/usr/share/datasets/fashion-mnist", IMAGE_DATA)
            for venv in venvs:
                pod.bind(venv, venv)
            for directory in build_tree_library_dirs(DDPTRAIN, DDPRUN):
                pod.bind(directory, directory)
            if spec.role == "launcher":
                pod.bind(tmp / "etc-mpi", os.path.dirname(k8s_jobs.MPI_HOSTFILE))
            volumes = {v["name"]: v for v in spec.template["spec"].get("volumes", [])}
            for mount in spec.container.get("volumeMounts", []):
                volume_spec = volumes[mount["name"]]
                if "persistentVolumeClaim" in volume_spec:
                    pod.bind(volume, mount["mountPath"], "rw")
                elif volume_spec.get("emptyDir", {}).get("medium") == "Memory":
                    pod.tmpfs.append(mount["mountPath"])
                else:
                    self.fail(f"volume {volume_spec} of {spec.name} is not emulated")
            pod.write()
            pods.append(pod)
        return pods, volume, hostfile

    def container_argv(self, cluster: NetnsHosts, pod: Pod) -> list[str]:
        """The container's command and args in the pod, with the env a container gets."""
        env = {"PATH": IMAGE_PATH, "HOME": k8s_jobs.IMAGE_USER_HOME, "HOSTNAME": pod.spec.hostname}
        env.update(pod.spec.env)
        return cluster.argv(pod.spec.name, ["unshare", "--mount", "--", "sh", "-c", POD_SH, "pod", str(pod.dir),
                                            "env", "-i", "-C", IMAGE_WORKDIR]
                            + [f"{k}={v}" for k, v in env.items()] + pod.spec.argv)

    def wait_ready(self, cluster: NetnsHosts, launcher: str, workers: list[Pod], procs: dict) -> None:
        """WaitForWorkersReady: every worker's port 2222 accepts (the readinessProbe),
        probed from the launcher's network namespace."""
        probe = ("import socket, sys\n"
                 "for host in sys.argv[1:]:\n"
                 "    socket.create_connection((host, %d), timeout=2).close()\n" % SSH_PORT)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for w in workers:
                self.assertIsNone(procs[w.spec.name].poll(), f"{w.spec.name} exited: {w.log.read_text()[-3000:]}")
            out = subprocess.run(["ip", "netns", "exec", cluster.ns[launcher], sys.executable, "-c", probe]
                                 + [cluster.ip[w.spec.name] for w in workers], capture_output=True, text=True)
            if out.returncode == 0:
                return
            self.assertLess(time.monotonic(), deadline, "workers not Ready: " + "\n".join(
                f"--- {w.spec.name}\n{w.log.read_text()[-2000:]}" for w in workers) + out.stderr[-1000:])
            time.sleep(0.2)

    def stop(self, cluster: NetnsHosts, procs: dict) -> None:
        """Ends every process in the pods' network namespaces (cleanPodPolicy: the worker
        pods are deleted): SIGTERM, then SIGKILL after 5 s."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            pids = [int(p) for ns in cluster.ns.values()
                    for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pids and all(p.poll() is not None for p in procs.values()):
                break
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def run_job(self, authorized_keys: bytes | None = None) -> Run:
        """Starts the worker pods, waits for them to be Ready, runs the launcher pod to its
        end and deletes every pod."""
        t_start = time.monotonic()
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        name = job["metadata"]["name"]
        self.assertEqual(job["spec"]["mpiImplementation"], "OpenMPI")
        self.assertEqual(job["spec"]["sshAuthMountPath"], f"{k8s_jobs.IMAGE_USER_HOME}/.ssh")
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-mpijob-ssh-"))
        os.chmod(tmp, 0o755)
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        pods, volume, hostfile = self.make_pods(job, tmp, authorized_keys)
        launcher, workers = pods[0], pods[1:]

        def aliases(pod_name: str) -> list[str]:
            # The headless Service <job> (:1513): <hostname>.<subdomain>.<namespace>.svc[.<domain>].
            return [f"{pod_name}.{name}.{NAMESPACE}.svc", f"{pod_name}.{name}.{NAMESPACE}.svc.cluster.local"]

        procs: dict[str, subprocess.Popen] = {}
        code, job_time = None, 0.0
        with NetnsHosts([p.spec.name for p in pods], tag="ddpssh", aliases=aliases) as cluster:
            try:
                for w in workers:
                    with open(w.log, "w") as log:
                        procs[w.spec.name] = subprocess.Popen(self.container_argv(cluster, w), stdout=log,
                                                              stderr=subprocess.STDOUT, start_new_session=True)
                    print(f"{w.spec.name} at {cluster.ip[w.spec.name]}: {' '.join(w.spec.argv)}", flush=True)
                self.wait_ready(cluster, launcher.spec.name, workers, procs)
                print(f"workers Ready after {time.monotonic() - t_start:.1f} s; hostfile:\n{hostfile.rstrip()}")
                print(f"{launcher.spec.name} at {cluster.ip[launcher.spec.name]}: {' '.join(launcher.spec.argv)}",
                      flush=True)
                t0 = time.monotonic()
                with open(launcher.log, "w") as log:
                    procs[launcher.spec.name] = subprocess.Popen(self.container_argv(cluster, launcher), stdout=log,
                                                                 stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    code = procs[launcher.spec.name].wait(timeout=JOB_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
                job_time = time.monotonic() - t0
            finally:
                self.stop(cluster, procs)
        logs = {p.spec.name: p.log.read_text() for p in pods}
        print(f"mpirun exited {code} after {job_time:.1f} s")
        run = Run(job, name, pods, cluster, aliases, volume, hostfile, logs, code, job_time, t_start)
        print(run.report(6))
        if os.environ.get("MPIJOB_SSH_DEBUG"):
            pathlib.Path(os.environ["MPIJOB_SSH_DEBUG"]).write_text(run.report(10000))
        return run

    def test_mpirun_over_ssh_trains_and_checkpoints(self):
        run = self.run_job()
        name, logs, cluster, volume = run.name, run.logs, run.cluster, run.volume
        launcher, workers = run.pods[0], run.pods[1:]
        job = run.job
        ranks = int(job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]) * int(job["spec"]["slotsPerWorker"])
        report = run.report()
        log = logs[launcher.spec.name]
        self.assertEqual(run.code, 0, report)

        # Both ranks trained, as one group of 2, to the last step, with a finite loss.
        self.assertIn(f"event=group_ready backend=gloo world_size={ranks}", log, report)
        self.assertIn("master=<mpi-bootstrap>", log, report)
        bootstrap = dict(re.findall(r"\[rank (\d+)\] \[rendezvous\] event=mpi_bootstrap master=(\S+):\d+", log))
        self.assertEqual(sorted(bootstrap), [str(r) for r in range(ranks)], report)
        masters = sorted(set(bootstrap.values()))
        # Rank 0, whose store every rank joins, runs on worker 0 (--map-by slot), not on the launcher.
        worker0 = workers[0].spec.name
        self.assertEqual(set(masters) - {worker0, cluster.ip[worker0]} - set(run.aliases(worker0)), set(), report)
        losses = [float(v) for v in re.findall(rf"step={STEPS}/\S*.*?\bloss=(\S+)", log)]
        self.assertTrue(losses and all(math.isfinite(v) for v in losses), report)

        # mpirun's ssh reached every host of the hostfile by its Service name on port 2222
        # (the pod's ssh_config: no known_hosts, so it says so for each)...
        for host in run.hostfile.split():
            if not host.startswith("slots="):
                self.assertIn(f"Permanently added '[{host}]:{SSH_PORT}' (ECDSA)", log, report)
        # ...and every worker's sshd let ddprun in with the Secret's key (ECDSA), from the launcher.
        launcher_ip = cluster.ip[launcher.spec.name]
        for w in workers:
            accepted = re.findall(rf"Accepted publickey for ddprun from {re.escape(launcher_ip)} port \d+ ssh2: ECDSA",
                                  logs[w.spec.name])
            self.assertTrue(accepted, f"no SSH login on {w.spec.name}:\n{logs[w.spec.name][-3000:]}")
            self.assertIn(f"Server listening on 0.0.0.0 port {SSH_PORT}", logs[w.spec.name])

        # Rank 0 (worker 0) wrote its checkpoint on the volume, under the manifest's directory.
        argv = launcher.spec.argv
        checkpoint_dir = next(argv[i + 1] for i, a in enumerate(argv) if a == "--checkpoint-dir")
        self.assertEqual(checkpoint_dir, f"{k8s_jobs.IMAGE_CHECKPOINT_DIR}/{name}")
        ckpt = volume / name / f"checkpoint-{STEPS:08d}.pt"
        self.assertTrue(ckpt.exists(), f"{sorted(str(p.relative_to(volume)) for p in volume.rglob('*'))}\n{report}")
        manifest = json.loads(ckpt.with_name(ckpt.name + ".json").read_text())
        self.assertEqual((manifest["step"], manifest["bytes"]), (STEPS, ckpt.stat().st_size))
        self.assertEqual(ckpt.stat().st_uid, k8s_jobs.IMAGE_UID, "rank 0 runs as uid 1000")

        logins = sum(len(re.findall(r"Accepted publickey for ddprun", logs[w.spec.name])) for w in workers)
        print(f"summary: MPIJob {name} over SSH: {ranks} ranks on {len(workers)} worker pods "
              f"({logins} publickey logins as ddprun on port {SSH_PORT}), rank 0 on {masters[0]}, "
              f"{STEPS} steps, final loss {losses[-1]:g}; "
              f"checkpoint {k8s_jobs.IMAGE_CHECKPOINT_DIR}/{name}/{ckpt.name} "
              f"({manifest['bytes']} bytes); mpirun {run.job_time:.1f} s, test {time.monotonic() - run.t_start:.1f} s")

    def test_mpirun_fails_when_ssh_does_not_let_it_in(self):
        """No fallback: with a key in the workers' authorized_keys that is not the Secret's,
        mpirun must fail, start no rank and leave no checkpoint."""
        other = ssh_secret()
        run = self.run_job(authorized_keys=other["ssh-publickey"])
        report = run.report()
        self.assertNotIn(run.code, (0, None), report)
        self.assertNotIn("event=mpi_bootstrap", run.logs[run.pods[0].spec.name], report)
        workers = [run.logs[w.spec.name] for w in run.pods[1:]]
        self.assertFalse([log for log in workers if "Accepted publickey" in log], report)
        # mpirun gives up at the first refusal: one worker at least turned ddprun's key away.
        self.assertTrue([log for log in workers if "Connection closed by authenticating user ddprun" in log], report)
        self.assertEqual(list(run.volume.iterdir()), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
