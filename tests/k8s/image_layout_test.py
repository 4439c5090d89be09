"""The paths the manifests use exist in the images the Dockerfiles build.

Reads docker/Dockerfile.cpu and docker/Dockerfile.cuda (no engine needed) and derives the
runtime stage's layout: files installed in the build stage under a directory that the
runtime stage copies (`COPY --from=build /opt/ddprun /opt/ddprun`), files and directories
the runtime stage COPYs or creates (mkdir, useradd), the programs of the Debian packages
it installs, its USER, ENTRYPOINT and sshd configuration. Then, for every container of
every manifest in k8s/, checks that
- the command, and the program after `ddprun ... --` or after mpirun's options, are
  executables of the image;
- the --config file is a file of the image, and the data directory that config names is
  a directory of it;
- the --checkpoint-dir lies on a volume the pod mounts, at a directory the image creates
  writable for its user;
- the pod's runAsUser is the image's user, the ENTRYPOINT is the ddprun the manifests run,
  and the MPIJob's sshd, its config, its key path and its port agree with the image.
A Dockerfile broken on purpose (a renamed binary, a missing mkdir) is caught.

Usage: image_layout_test.py REPO_DIR
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()

# Programs the runtime stage gets from the Debian packages it installs.
PACKAGE_PROGRAMS = {
    "openmpi-bin": ["/usr/bin/mpirun", "/usr/bin/mpiexec", "/usr/bin/orted"],
    "openssh-server": ["/usr/sbin/sshd"],
    "openssh-client": ["/usr/bin/ssh"],
}
# Paths the operators or the kubelet put into pods; not the image's business.
OPERATOR_PATHS = {k8s_jobs.MPI_HOSTFILE, "/dev/termination-log"}


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined and
    comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


class Layout:
    """What the runtime stage of one Dockerfile contains."""

    def __init__(self, text: str):
        stages, stage = [], None
        for keyword, args in instructions(text):
            if keyword == "FROM":
                stage = {"from": args, "ins": []}
                stages.append(stage)
            else:
                stage["ins"].append((keyword, args))
        self.build, self.runtime = stages[0], stages[-1]
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.writable: set[str] = set()
        self.packages: set[str] = set()
        self.user = None
        self.entrypoint = None
        self.ssh_port = None
        built = self._built_files()
        for keyword, args in self.runtime["ins"]:
            if keyword == "COPY":
                words = shlex.split(args)
                flags = [w for w in words if w.startswith("--")]
                src, dst = [w for w in words if not w.startswith("--")]
                if "--from=build" in flags:
                    moved = {dst + f[len(src):] for f in built if f == src or f.startswith(src + "/")}
                    self.files |= moved
                    self.dirs.add(dst)
                    if not moved and src not in self._build_dirs():
                        raise AssertionError(f"COPY --from=build {src}: the build stage makes nothing there")
                else:
                    assert (REPO / src).exists(), f"COPY {src}: not in the repository"
                    self.files.add(dst)
                    if any(f.startswith("--chown=") for f in flags):
                        self.writable.add(dst)
            elif keyword == "RUN":
                for m in re.finditer(r"mkdir -p ((?:/[^\s&;]+\s*)+)", args):
                    self.dirs |= set(m.group(1).split())
                for m in re.finditer(r"chown \S+ ((?:/[^\s&;]+\s*)+)", args):
                    self.writable |= set(m.group(1).split())
                m = re.search(r"useradd .*--uid (\d+).*--create-home.* (\w+)\s*(&&|$)", args)
                if m:
                    self.uid, self.user_name = int(m.group(1)), m.group(2)
                    self.dirs.add(f"/home/{m.group(2)}")
                    self.writable.add(f"/home/{m.group(2)}")
                m = re.search(r"apt-get install [^&]*", args)
                if m:
                    self.packages |= {w for w in m.group(0).split()[2:] if not w.startswith("-")}
                m = re.search(r"\\1(\d+)/g' /etc/ssh/ssh_config", args)
                if m:
                    self.ssh_port = int(m.group(1))
            elif keyword == "USER":
                self.user = args
            elif keyword == "ENTRYPOINT":
                self.entrypoint = json.loads(args)
        for package, programs in PACKAGE_PROGRAMS.items():
            if package in self.packages:
                self.files |= set(programs)

    def _build_dirs(self) -> set[str]:
        dirs = set()
        for keyword, args in self.build["ins"]:
            if keyword == "RUN":
                for m in re.finditer(r"mkdir -p ((?:/[^\s&;]+\s*)+)", args):
                    dirs |= set(m.group(1).split())
                if "dataset-fashion-mnist" in args:  # the Debian package's files
                    dirs.add("/usr/share/datasets/fashion-mnist")
        return dirs

    def _built_files(self) -> set[str]:
        files = set()
        for keyword, args in self.build["ins"]:
            if keyword == "RUN":
                for m in re.finditer(r"install -m \d+ \S+ (/\S+)", args):
                    files.add(m.group(1))
        return files | self._build_dirs()

    def has_file(self, path: str) -> bool:
        return path in self.files

    def has_dir(self, path: str) -> bool:
        path = path.rstrip("/")
        return path in self.dirs or any(path.startswith(d.rstrip("/") + "/") for d in self.dirs)


def layouts() -> dict[str, Layout]:
    return {name: Layout((REPO / "docker" / f"Dockerfile.{name}").read_text()) for name in ("cpu", "cuda")}


def image_of(container_image: str) -> str:
    m = re.match(r"(?:.*/)?ddprun-(cpu|cuda):", container_image)
    assert m, f"image {container_image!r} is neither ddprun-cpu nor ddprun-cuda"
    return m.group(1)


def config_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a == flag:
            return argv[i + 1]
    return None


def layout_errors(doc: dict, layout_by_name: dict[str, Layout]) -> list[str]:
    """Every path of every container of one job manifest, checked against its image."""
    errors = []
    kind = doc["kind"]
    if kind == "PyTorchJob":
        pods = k8s_jobs.pytorchjob_pods(doc)
    elif kind == "TrainJob":
        pods = k8s_jobs.trainjob_pods(doc)
        patch_pod = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
            "replicatedJobs"][0]["template"]["spec"]["template"]
        for p in pods:
            p.template = patch_pod
            p.container = dict(p.container, volumeMounts=patch_pod["spec"]["containers"][0]["volumeMounts"])
    else:
        launcher, _ = k8s_jobs.mpijob_launcher(doc)
        worker_t = doc["spec"]["mpiReplicaSpecs"]["Worker"]["template"]
        pods = [launcher, k8s_jobs.Pod(doc["metadata"]["name"], kind, "worker", 0, "w", "w",
                                       worker_t["spec"]["containers"][0], {}, worker_t)]
    for pod in pods:
        where = f"{doc['metadata']['name']}/{pod.role}"
        layout = layout_by_name[image_of(pod.container["image"])]
        argv = pod.argv
        mounts = [m["mountPath"] for m in pod.container.get("volumeMounts", [])]
        if os.path.basename(argv[0]) == "ddprun":
            programs = [argv[0], k8s_jobs.split_ddprun(argv)[1][0]]
            if layout.entrypoint != [argv[0]]:
                errors.append(f"{where}: command {argv[0]} is not the image's ENTRYPOINT {layout.entrypoint}")
            train_argv = k8s_jobs.split_ddprun(argv)[1]
        elif os.path.basename(argv[0]) == "mpirun":
            programs = ["/usr/bin/mpirun", k8s_jobs.split_mpirun(argv)[1][0]]
            train_argv = k8s_jobs.split_mpirun(argv)[1]
        else:
            programs, train_argv = [argv[0]], []
        for p in programs:
            if not layout.has_file(p):
                errors.append(f"{where}: program {p} is not in the image")
        for a in argv:
            if a.startswith("/") and a not in OPERATOR_PATHS and a not in programs and not (
                    layout.has_file(a) or layout.has_dir(a) or any(a.startswith(m + "/") for m in mounts)):
                errors.append(f"{where}: path {a} is neither in the image nor on a volume")
        if train_argv:
            config = config_value(train_argv, "--config")
            if config is not None:
                if not layout.has_file(config):
                    errors.append(f"{where}: config {config} is not in the image")
                else:
                    values = yaml.safe_load((REPO / "docker/ddptrain.yaml").read_text())
                    data = values.get("data-dir") or values.get("data-path")
                    if not layout.has_dir(data):
                        errors.append(f"{where}: the config's data directory {data} is not in the image")
            ckpt = config_value(train_argv, "--checkpoint-dir")
            if ckpt:
                parent = str(pathlib.PurePosixPath(ckpt).parent)
                if parent not in layout.writable:
                    errors.append(f"{where}: {parent} (checkpoints) is not created writable for the image's user")
                if kind == "MPIJob":  # rank 0 runs on worker 0, which must mount it
                    mounts = [m["mountPath"] for m in doc["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"][
                        "containers"][0].get("volumeMounts", [])]
                if parent not in mounts:
                    errors.append(f"{where}: {parent} (checkpoints) is not a volume mount of the pod")
        uid = (pod.template.get("spec", {}).get("securityContext", {}) or {}).get("runAsUser")
        if uid is not None and (uid != layout.uid or layout.user not in (str(uid), f"{uid}:{uid}")):
            errors.append(f"{where}: runAsUser {uid} is not the image's user {layout.user}")
        if pod.role == "worker" and kind == "MPIJob":
            sshd_config = config_value(argv, "-f")
            if not layout.has_file(sshd_config):
                errors.append(f"{where}: sshd config {sshd_config} is not in the image")
            else:
                conf = dict(line.split(None, 1) for line in (REPO / "docker/sshd_config").read_text().splitlines()
                            if line.strip() and not line.startswith("#"))
                key_dir = doc["spec"]["sshAuthMountPath"]
                if not conf["HostKey"].startswith(key_dir + "/"):
                    errors.append(f"{where}: sshd HostKey {conf['HostKey']} is not under sshAuthMountPath {key_dir}")
                if not key_dir.startswith(f"/home/{layout.user_name}/"):
                    errors.append(f"{where}: sshAuthMountPath {key_dir} is not in the user's home")
                ports = [p["containerPort"] for p in pod.container.get("ports", [])]
                if int(conf["Port"]) not in ports or layout.ssh_port != int(conf["Port"]):
                    errors.append(f"{where}: sshd port {conf['Port']}, container ports {ports}, "
                                  f"ssh client port {layout.ssh_port}")
    return errors


class ImageLayoutTest(unittest.TestCase):
    def test_layout_of_both_images(self):
        for name, layout in layouts().items():
            with self.subTest(image=name):
                # The module ddprun loads for --rdzv-backend c10d (pytorchjob-elastic.yaml).
                for f in (k8s_jobs.IMAGE_DDPRUN, k8s_jobs.IMAGE_DDPTRAIN, k8s_jobs.IMAGE_CONFIG,
                          f"{k8s_jobs.IMAGE_LIB_DIR}/libddprun_rdzv_c10d.so",
                          f"{k8s_jobs.IMAGE_USER_HOME}/.sshd_config", "/usr/bin/mpirun", "/usr/sbin/sshd"):
                    self.assertTrue(layout.has_file(f), f)
                for d in (k8s_jobs.IMAGE_LIB_DIR, k8s_jobs.IMAGE_DATA_DIR, k8s_jobs.IMAGE_CHECKPOINT_DIR):
                    self.assertTrue(layout.has_dir(d), d)
                self.assertIn(k8s_jobs.IMAGE_CHECKPOINT_DIR, layout.writable)
                self.assertEqual(layout.entrypoint, [k8s_jobs.IMAGE_DDPRUN])
                self.assertEqual(layout.uid, k8s_jobs.IMAGE_UID)
                self.assertEqual(layout.user, f"{k8s_jobs.IMAGE_UID}:{k8s_jobs.IMAGE_UID}")
                self.assertEqual(layout.runtime["from"], "debian:bookworm-slim AS runtime")
                print(f"{name}: {len(layout.files)} files, dirs {sorted(layout.dirs)}")

    def test_every_context_copy_passes_every_ignore_file(self):
        # docker reads Dockerfile.<flavor>.dockerignore, podman and buildah docker/.dockerignore
        # (docker/build.sh): a COPY source that one of them leaves out breaks that engine only.
        # The files list what is sent: "*", then "!path" lines.
        for flavor in ("cpu", "cuda"):
            copies = []
            for keyword, args in instructions((REPO / f"docker/Dockerfile.{flavor}").read_text()):
                words = shlex.split(args) if keyword == "COPY" else []
                if words and not any(w.startswith("--from=") for w in words):
                    copies.append([w for w in words if not w.startswith("--")][0])
            for ignore in (f"docker/Dockerfile.{flavor}.dockerignore", "docker/.dockerignore"):
                allowed = [line[1:].rstrip("/") for line in (REPO / ignore).read_text().splitlines()
                           if line.startswith("!")]
                for src in copies:
                    with self.subTest(dockerfile=flavor, ignore=ignore, copy=src):
                        self.assertTrue(any(src == a or src.startswith(a + "/") for a in allowed),
                                        f"COPY {src}: {ignore} does not send it; add '!{src}'")

    def test_every_manifest_path_is_in_its_image(self):
        by_name = layouts()
        for job_file in k8s_jobs.JOB_FILES:
            doc = k8s_jobs.load_job(REPO, job_file)
            with self.subTest(manifest=job_file):
                self.assertEqual(layout_errors(doc, by_name), [])

    def test_broken_dockerfiles_are_caught(self):
        text = (REPO / "docker/Dockerfile.cpu").read_text()
        doc = k8s_jobs.load_job(REPO, "pytorchjob-cpu.yaml")
        cases = [
            ("renamed trainer", text.replace("/opt/ddprun/bin/ddptrain \\", "/opt/ddprun/bin/train \\", 1),
             "program /opt/ddprun/bin/ddptrain"),
            ("no /checkpoints", text.replace("mkdir -p /checkpoints /data /etc/ddprun",
                                             "mkdir -p /data /etc/ddprun").replace(
                "chown ddprun:ddprun /checkpoints /data", "chown ddprun:ddprun /data"), "/checkpoints"),
            ("config elsewhere", text.replace("COPY docker/ddptrain.yaml /etc/ddprun/ddptrain.yaml",
                                              "COPY docker/ddptrain.yaml /etc/ddptrain.yaml"), "config"),
            ("root user", text.replace("USER 1000:1000", "USER 0"), "runAsUser"),
        ]
        for what, broken, needle in cases:
            with self.subTest(broken=what):
                self.assertNotEqual(broken, text)
                errors = layout_errors(doc, {"cpu": Layout(broken), "cuda": layouts()["cuda"]})
                self.assertTrue(any(needle in e for e in errors), f"{what}: {errors}")
                print(f"caught ({what}): {errors[0]}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
