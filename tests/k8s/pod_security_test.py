"""Every pod of every job passes the Kubernetes Pod Security Standard "restricted".

The rules are those of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(the "Baseline" and "Restricted" tables; "restricted" includes every baseline rule), as
the API server's PodSecurity admission checks them on a pod. They are written out below,
one function per control, and applied to:

- every pod template of every job after `kubectl kustomize` (the job's own file with its
  runtime, the claim and the policy), plus the TrainJob's pod as Trainer builds it from the
  runtime and the TrainJob's runtime patch;
- the same with every optional component of k8s/components/ and a namePrefix;
- the init container training-operator v1.9 adds to a PyTorchJob's Worker pods: its own
  built-in template fails (the test shows which rules), the template in
  k8s/training-operator/init-container-configmap.yaml passes.

Broken copies (a hostPath volume, a root user, a missing drop ALL, ...) must be reported.

Usage: pod_security_test.py REPO_DIR
"""
from __future__ import annotations

import copy
import os
import pathlib
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
COMPONENTS = ["gpu-node-pool", "kueue", "pdb", "priority-class", "volcano"]

# --- the profile (kubernetes.io/docs/concepts/security/pod-security-standards/) -------------

# Restricted, "Volume Types": only these volume sources.
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
# Baseline, "Sysctls": the safe set.
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
# Baseline, "Capabilities": what may be added; Restricted narrows it to NET_BIND_SERVICE.
RESTRICTED_ADD_CAPS = {"NET_BIND_SERVICE"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def containers(pod: dict):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(field, []) or []:
            yield field, c


def restricted_errors(template: dict) -> list[str]:
    """The controls of the Baseline and Restricted profiles, for one pod template."""
    pod = template.get("spec", {})
    psc = pod.get("securityContext", {}) or {}
    errors = []

    def err(control, what):
        errors.append(f"{control}: {what}")

    # Baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            err("Host Namespaces", f"spec.{field} is true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        err("HostProcess", "spec.securityContext.windowsOptions.hostProcess")
    for v in pod.get("volumes", []) or []:
        if "hostPath" in v:
            err("HostPath Volumes", f"volume {v['name']} is a hostPath")
        sources = set(v) - {"name"}
        if not sources <= ALLOWED_VOLUMES:
            err("Volume Types", f"volume {v['name']}: {sorted(sources - ALLOWED_VOLUMES)}")
    for s in psc.get("sysctls", []) or []:
        if s["name"] not in SAFE_SYSCTLS:
            err("Sysctls", s["name"])
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        err("AppArmor", "pod profile Unconfined")
    for key, value in (template.get("metadata", {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value == "unconfined":
            err("AppArmor", key)
    se = psc.get("seLinuxOptions") or {}
    if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
        err("SELinux", f"pod seLinuxOptions {se}")

    # Restricted, pod level
    pod_nonroot = psc.get("runAsNonRoot") is True
    if psc.get("runAsUser") == 0:
        err("Running as Non-root user", "spec.securityContext.runAsUser is 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        err("Seccomp", f"pod profile {pod_seccomp}")

    for field, c in containers(pod):
        sc = c.get("securityContext", {}) or {}
        where = f"{field} {c['name']}"
        # Baseline, per container
        if sc.get("privileged"):
            err("Privileged Containers", where)
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            err("HostProcess", where)
        for p in c.get("ports", []) or []:
            if p.get("hostPort", 0):
                err("Host Ports", f"{where} hostPort {p['hostPort']}")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            err("AppArmor", where)
        cse = sc.get("seLinuxOptions") or {}
        if cse.get("type", "") not in SELINUX_TYPES or cse.get("user") or cse.get("role"):
            err("SELinux", f"{where} seLinuxOptions {cse}")
        if sc.get("procMount", "Default") != "Default":
            err("/proc Mount Type", where)
        # Restricted, per container
        if sc.get("allowPrivilegeEscalation") is not False:
            err("Privilege Escalation", f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_nonroot or sc.get("runAsNonRoot") is True):
            err("Running as Non-root", f"{where}: runAsNonRoot is not true (pod or container)")
        if sc.get("runAsUser") == 0:
            err("Running as Non-root user", f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault", "Localhost") or (seccomp is None and pod_seccomp is None):
            err("Seccomp", f"{where}: profile {seccomp or pod_seccomp}, must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            err("Capabilities", f"{where}: does not drop ALL")
        added = set(caps.get("add") or []) - RESTRICTED_ADD_CAPS
        if added:
            err("Capabilities", f"{where}: adds {sorted(added)}")
    return errors


# --- training-operator's init container -------------------------------------------------------

# training-operator release-1.9 (078ec30f) pkg/controller.v1/pytorch/initcontainer.go:35-46, with
# the defaults of pkg/config/config.go:28-33: what a Worker pod of a PyTorchJob with a
# Master gets as its initContainers.
OPERATOR_INIT_TEMPLATE = """
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  resources:
    limits:
      cpu: 100m
      memory: 20Mi
    requests:
      cpu: 50m
      memory: 10Mi
  command: ['sh', '-c', 'err=1;for i in $(seq {{.MaxTries}}); do if nslookup {{.MasterAddr}}; then err=0 && break; fi;echo waiting for master; sleep 2; done; exit $err']"""  # noqa: E501


def init_containers(template_text: str, master: str) -> list[dict]:
    """initcontainer.go GetInitContainer: the Go template filled in and parsed as YAML."""
    text = (template_text.replace("{{.InitContainerImage}}", "alpine:3.10")
            .replace("{{.MaxTries}}", "100").replace("{{.MasterAddr}}", master))
    return yaml.safe_load(text)


def with_operator_init(doc: dict, template_text: str) -> list[tuple[str, dict]]:
    """The job's pod templates as the operator creates the pods: Workers of a PyTorchJob
    with a Master get the init container (initcontainer.go:113-130)."""
    out = []
    for where, template in k8s_jobs.pod_templates(doc):
        t = copy.deepcopy(template)
        specs = doc["spec"].get("pytorchReplicaSpecs", {})
        if doc["kind"] == "PyTorchJob" and "Master" in specs and where.endswith(" Worker"):
            t["spec"]["initContainers"] = (t["spec"].get("initContainers") or []) + init_containers(
                template_text, f"{doc['metadata']['name']}-master-0")
        out.append((where, t))
    return out


def rendered_pods(docs: list[dict]) -> list[tuple[str, dict]]:
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterTrainingRuntime"}
    pods = []
    for d in docs:
        pods += k8s_jobs.pod_templates(d, runtimes)
    return pods


def job_renders(components=(), **fields) -> list[list[dict]]:
    out = []
    for job_file in k8s_jobs.JOB_FILES:
        runtime = k8s_jobs.RUNTIME_FILES if job_file == "trainjob.yaml" else []
        out.append(k8s_jobs.render(REPO, k8s_jobs.CORE_FILES + runtime + [job_file], components, **fields))
    return out


class PodSecurityTest(unittest.TestCase):
    def test_every_rendered_pod_is_restricted(self):
        count = 0
        for docs in job_renders():
            for where, template in rendered_pods(docs):
                with self.subTest(pod=where):
                    self.assertEqual(restricted_errors(template), [])
                    count += 1
        # 2 + 2 PyTorchJob replicas, 1 elastic, 2 MPIJob, the runtime's node and the TrainJob's
        self.assertEqual(count, 9)

    def test_with_every_component_and_a_name_prefix(self):
        for docs in job_renders(COMPONENTS, namePrefix="team-"):
            for where, template in rendered_pods(docs):
                with self.subTest(pod=where):
                    self.assertEqual(restricted_errors(template), [])

    def test_every_pod_sets_fs_group_change_policy(self):
        for docs in job_renders():
            for where, template in rendered_pods(docs):
                with self.subTest(pod=where):
                    sc = template["spec"]["securityContext"]
                    self.assertEqual(sc.get("fsGroupChangePolicy"), "OnRootMismatch")
                    self.assertEqual(sc.get("runAsUser"), k8s_jobs.IMAGE_UID)

    def test_operator_init_container(self):
        """training-operator's own init-pytorch fails "restricted" on two per-container rules;
        the template this repository ships for --pytorch-init-container-template-file passes."""
        (cm,) = k8s_jobs.load_all(REPO / "k8s/training-operator/init-container-configmap.yaml")
        ours = cm["data"]["initContainer.yaml"]
        # The same container apart from its securityContext: the operator's command and resources.
        mine, = init_containers(ours, "m")
        theirs, = init_containers(OPERATOR_INIT_TEMPLATE, "m")
        self.assertEqual({k: v for k, v in mine.items() if k != "securityContext"}, theirs)
        for name in ("pytorchjob-cpu.yaml", "pytorchjob-gpu.yaml"):
            doc = k8s_jobs.load_job(REPO, name)
            with self.subTest(job=name, template="operator's"):
                errors = [e for _, t in with_operator_init(doc, OPERATOR_INIT_TEMPLATE)
                          for e in restricted_errors(t)]
                self.assertEqual(sorted({e.split(":")[0] for e in errors}), ["Capabilities", "Privilege Escalation"])
                self.assertTrue(all("init-pytorch" in e for e in errors), errors)
                print(f"{name}: the operator's init container: {errors}")
            with self.subTest(job=name, template="ours"):
                self.assertEqual([e for _, t in with_operator_init(doc, ours) for e in restricted_errors(t)], [])

    def test_broken_copies_are_reported(self):
        def worker(doc):
            return doc["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]

        cases = [
            ("hostPath", lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
             "HostPath"),
            ("nfs volume", lambda t: t["spec"]["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
             "Volume Types"),
            ("root user", lambda t: t["spec"]["securityContext"].update(runAsUser=0), "runAsUser is 0"),
            ("no runAsNonRoot", lambda t: t["spec"]["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
            ("escalation allowed", lambda t: t["spec"]["containers"][0]["securityContext"].pop(
                "allowPrivilegeEscalation"), "Privilege Escalation"),
            ("capabilities kept", lambda t: t["spec"]["containers"][0]["securityContext"].pop("capabilities"),
             "drop ALL"),
            ("capability added", lambda t: t["spec"]["containers"][0]["securityContext"]["capabilities"].update(
                add=["NET_ADMIN"]), "NET_ADMIN"),
            ("no seccomp", lambda t: t["spec"]["securityContext"].pop("seccompProfile"), "Seccomp"),
            ("seccomp unconfined", lambda t: t["spec"]["securityContext"].update(
                seccompProfile={"type": "Unconfined"}), "Seccomp"),
            ("privileged", lambda t: t["spec"]["containers"][0]["securityContext"].update(privileged=True),
             "Privileged"),
            ("host network", lambda t: t["spec"].update(hostNetwork=True), "Host Namespaces"),
            ("host port", lambda t: t["spec"]["containers"][0]["ports"][0].update(hostPort=23456), "Host Ports"),
            ("unsafe sysctl", lambda t: t["spec"]["securityContext"].update(
                sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "Sysctls"),
        ]
        for what, mutate, needle in cases:
            with self.subTest(broken=what):
                t = copy.deepcopy(worker(k8s_jobs.load_job(REPO, "pytorchjob-gpu.yaml")))
                mutate(t)
                errors = restricted_errors(t)
                self.assertTrue(any(needle in e for e in errors), f"{what}: {errors}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
