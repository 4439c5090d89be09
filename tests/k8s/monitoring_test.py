"""Scraping, probes and alerts of the jobs in k8s/ (k8s/monitoring/ and the job manifests):

- every pod that runs ddprun (or, under an MPIJob, the ranks mpirun starts) names the
  container port metrics, 9410/TCP, and gets DDPRUN_METRICS_PORT=9410; its probes are the
  ones the pod can afford: a startup window longer than the rendezvous timeout, a liveness
  window of at least two minutes, and readiness on /readyz only where no peer resolves the
  pod's name through a Service that publishes Ready pods alone (see the manifests' comments);
- the Service, ServiceMonitor and PodMonitor select labels that every such pod template
  sets, and their relabelings, applied the way Prometheus does to the labels each operator
  puts on its pods, give each pod its job_name, replica_type and replica_index;
- every NetworkPolicy admits the scraper to 9410 and to nothing else, beside its job's pods;
- `promtool check rules` passes on the PrometheusRule's groups and `promtool test rules`
  on tests/k8s/prometheus_rules_test.yaml (each alert firing and staying silent).
Each check is a function that returns its errors; broken copies must produce them.

Usage: monitoring_test.py REPO_DIR   (promtool on PATH: Debian's prometheus package)
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
HERE = pathlib.Path(__file__).resolve().parent
MONITORING = REPO / "k8s" / "monitoring"

METRICS_PORT = {"name": "metrics", "containerPort": 9410, "protocol": "TCP"}
SCRAPE_INTERVAL = "15s"
LIVENESS_MIN_WINDOW = 120  # seconds of failed probes before a kill: ddprun's own timeouts act first


def load(path: pathlib.Path) -> dict:
    (doc,) = k8s_jobs.load_all(path)
    return doc


def env_of(container: dict) -> dict:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


# --- the pods that serve metrics -------------------------------------------------------------

def serving_pods(job: dict, runtime: dict) -> list[tuple[str, dict, dict, str | None]]:
    """(role, container, template labels, readiness path) of each pod template whose pods
    serve metrics, role as in k8s_jobs.Pod; readiness None: a tcpSocket probe on ssh (MPIJob
    workers)."""
    kind = job["kind"]
    if kind == "PyTorchJob":
        elastic = "elasticPolicy" in job["spec"]
        return [(rtype.lower(), next(c for c in rs["template"]["spec"]["containers"] if c["name"] == "pytorch"),
                 rs["template"].get("metadata", {}).get("labels", {}),
                 "/healthz" if rtype == "Master" or elastic else "/readyz")
                for rtype, rs in job["spec"]["pytorchReplicaSpecs"].items()]
    if kind == "MPIJob":
        worker = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]
        return [("worker", worker["spec"]["containers"][0], worker.get("metadata", {}).get("labels", {}), None)]
    (rj,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = rj["template"]["spec"]["template"]
    return [("node", pod["spec"]["containers"][0], pod.get("metadata", {}).get("labels", {}), "/readyz")]


def _window(probe: dict) -> int:
    return probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)


def pod_errors(job: dict, runtime: dict) -> list[str]:
    """The port, the env and the probes of every pod of `job` (`runtime`: the TrainJob's)."""
    errors = []
    name = job["metadata"]["name"]
    if job["kind"] == "TrainJob":
        env = {e["name"]: str(e.get("value", "")) for e in job["spec"]["trainer"].get("env", [])}
        if job["spec"]["runtimeRef"]["name"] != runtime["metadata"]["name"]:
            errors.append(f"{name}: runs on runtime {job['spec']['runtimeRef']['name']}, not "
                          f"{runtime['metadata']['name']} (the one with the metrics port)")
    elif job["kind"] == "MPIJob":
        launcher_pod, _ = k8s_jobs.mpijob_launcher(job)
        env = launcher_pod.env
        if "DDPRUN_METRICS_PORT" not in k8s_jobs.mpirun_option(launcher_pod.argv, "-x"):
            errors.append(f"{name}: mpirun does not forward DDPRUN_METRICS_PORT (-x) to the ranks")
        launcher = launcher_pod.container
        if launcher.get("ports") or any(p in launcher for p in ("livenessProbe", "readinessProbe")):
            errors.append(f"{name} Launcher: serves nothing (mpirun only), yet has ports or probes")
    for role, c, _, ready in serving_pods(job, runtime):
        where = f"{name} {role}"
        if job["kind"] == "PyTorchJob":
            env = env_of(c)
        if env.get("DDPRUN_METRICS_PORT") != str(METRICS_PORT["containerPort"]):
            errors.append(f"{where}: DDPRUN_METRICS_PORT is {env.get('DDPRUN_METRICS_PORT')!r}, "
                          f"expected {METRICS_PORT['containerPort']}")
        if [p for p in c.get("ports", []) if p.get("name") == "metrics"] != [METRICS_PORT]:
            errors.append(f"{where}: no container port {METRICS_PORT} (found {c.get('ports')})")
        if ready is None:  # MPIJob worker: sshd until mpirun starts the ranks
            if c.get("readinessProbe", {}).get("tcpSocket") != {"port": "ssh"}:
                errors.append(f"{where}: readiness must be sshd's port (WaitForWorkersReady): "
                              f"{c.get('readinessProbe')}")
            for probe in ("livenessProbe", "startupProbe"):
                if probe in c:
                    errors.append(f"{where}: {probe} would kill a worker that waits for mpirun")
            continue
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", ready)):
            got = c.get(probe, {}).get("httpGet")
            if got != {"path": path, "port": "metrics"}:
                errors.append(f"{where}: {probe} is {got}, expected GET {path} on port metrics")
        rdzv = float(env.get("DDPRUN_RDZV_TIMEOUT", "600"))
        if "startupProbe" in c and _window(c["startupProbe"]) <= rdzv:
            errors.append(f"{where}: the startup window, {_window(c['startupProbe'])} s, is not longer than "
                          f"DDPRUN_RDZV_TIMEOUT ({rdzv:g} s): the kubelet would kill a rendezvous ddprun "
                          "still waits for")
        if "livenessProbe" in c and _window(c["livenessProbe"]) < LIVENESS_MIN_WINDOW:
            errors.append(f"{where}: the liveness window, {_window(c['livenessProbe'])} s, is under "
                          f"{LIVENESS_MIN_WINDOW} s")
    return errors


# --- what the operators put on their pods, and what the relabelings make of it ---------------

def operator_pod_labels(pod: k8s_jobs.Pod, job: dict) -> dict:
    """The labels an operator adds to the pod template's own:
    - training-operator v1.9 (PyTorchJob): job-name and operator-name (common/job_controller.go:
      236-242), replica-type (lower case) and replica-index, job-role=master on the Master or,
      without one, on Worker 0 (common/pod.go:402-408, pytorchjob_controller.go IsMasterRole);
    - mpi-operator: job-name, operator-name, job-role=worker, replica-index and no replica-type
      (pkg/controller/mpi_job_controller.go:1508-1511, 1772-1777);
    - JobSet under Trainer v2: jobset-name (the TrainJob's name), replicatedjob-name, and the
      batch Job's completion index, which is the node rank (jobset api/jobset/v1alpha2/jobset_types.go)."""
    if pod.kind == "TrainJob":
        return {"jobset.sigs.k8s.io/jobset-name": pod.job, "jobset.sigs.k8s.io/replicatedjob-name": pod.role,
                "batch.kubernetes.io/job-completion-index": str(pod.index)}
    labels = {"training.kubeflow.org/job-name": pod.job, "training.kubeflow.org/replica-index": str(pod.index)}
    if pod.kind == "MPIJob":
        labels.update({"training.kubeflow.org/operator-name": "mpi-operator",
                       "training.kubeflow.org/job-role": pod.role})
        return labels
    labels.update({"training.kubeflow.org/operator-name": "pytorchjob-controller",
                   "training.kubeflow.org/replica-type": pod.role})
    has_master = "Master" in job["spec"]["pytorchReplicaSpecs"]
    if pod.role == "master" or (not has_master and pod.index == 0):
        labels["training.kubeflow.org/job-role"] = "master"
    return labels


def relabel(rules: list[dict], pod_labels: dict) -> dict:
    """Prometheus's `replace` relabeling over a pod's __meta_kubernetes_pod_label_<name>."""
    meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in pod_labels.items()}
    out = {}
    for rule in rules:
        assert rule.get("action", "replace") == "replace", rule
        value = rule.get("separator", ";").join(out.get(s, meta.get(s, "")) for s in rule["sourceLabels"])
        m = re.fullmatch(rule.get("regex", "(.*)"), value)
        if m:
            out[rule["targetLabel"]] = m.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return out


def metrics_pods(job: dict) -> list[k8s_jobs.Pod]:
    """Every pod of `job` that serves metrics, as the operator names and numbers it."""
    if job["kind"] == "PyTorchJob":
        return k8s_jobs.pytorchjob_pods(job)
    if job["kind"] == "TrainJob":
        return k8s_jobs.trainjob_pods(job)
    name = job["metadata"]["name"]
    return [k8s_jobs.Pod(name, "MPIJob", "worker", i, f"{name}-worker-{i}", f"{name}-worker-{i}", {}, {}, {})
            for i in range(job["spec"]["mpiReplicaSpecs"]["Worker"].get("replicas", 1))]


def scrape_errors(jobs: list[dict], runtime: dict, service: dict, service_monitor: dict,
                  pod_monitor: dict) -> list[str]:
    """Service and monitors select every serving pod and label its series with its job."""
    errors = []
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    (sm_endpoint,) = service_monitor["spec"]["endpoints"]
    (svc_port,) = service["spec"]["ports"]
    if endpoint.get("port") != "metrics" or endpoint.get("interval") != SCRAPE_INTERVAL:
        errors.append(f"PodMonitor: scrapes {endpoint.get('port')} every {endpoint.get('interval')}")
    if sm_endpoint.get("port") != svc_port["name"] or sm_endpoint.get("interval") != SCRAPE_INTERVAL:
        errors.append(f"ServiceMonitor: scrapes {sm_endpoint.get('port')} every {sm_endpoint.get('interval')}")
    if sm_endpoint.get("relabelings") != endpoint.get("relabelings"):
        errors.append("ServiceMonitor and PodMonitor relabel differently")
    if (svc_port.get("targetPort"), svc_port.get("port")) != ("metrics", METRICS_PORT["containerPort"]):
        errors.append(f"Service: port {svc_port}, expected targetPort metrics, port 9410")
    spec = service["spec"]
    if spec.get("clusterIP") != "None" or spec.get("publishNotReadyAddresses") is not True:
        errors.append("Service: expected headless (clusterIP None) with publishNotReadyAddresses: true")
    if not service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
        errors.append("ServiceMonitor: its selector does not match the Service's labels")
    selectors = {"Service": spec["selector"], "PodMonitor": pod_monitor["spec"]["selector"]["matchLabels"]}
    for job in jobs:
        name = job["metadata"]["name"]
        template_labels = {role: labels for role, _, labels, _ in serving_pods(job, runtime)}
        for pod in metrics_pods(job):
            labels = {**template_labels[pod.role], **operator_pod_labels(pod, job)}
            for what, selector in selectors.items():
                if not selector.items() <= labels.items():
                    errors.append(f"{what}: selector {selector} misses {pod.name} (labels {labels})")
            got = relabel(endpoint.get("relabelings", []), operator_pod_labels(pod, job))
            want = {"job_name": name, "replica_type": pod.role, "replica_index": str(pod.index)}
            if got != want:
                errors.append(f"{pod.name}: relabeled to {got}, expected {want}")
    return errors


# --- the NetworkPolicy ------------------------------------------------------------------------

def network_policy_errors(policies: list[dict]) -> list[str]:
    """Each policy: its job's pods, anywhere; the scraper (namespace AND pod selector in one
    peer), to 9410/TCP only; nothing else."""
    errors = []
    for policy in policies:
        name = policy["metadata"]["name"]
        rules = policy["spec"].get("ingress", [])
        own = {"from": [{"podSelector": policy["spec"]["podSelector"]}]}
        scrapers = [r for r in rules if r != own]
        if own not in rules or len(scrapers) != 1:
            errors.append(f"{name}: expected its job's pods and one scraper rule, found {rules}")
            continue
        (scraper,) = scrapers
        if scraper.get("ports") != [{"port": METRICS_PORT["containerPort"], "protocol": "TCP"}]:
            errors.append(f"{name}: the scraper may reach {scraper.get('ports')}, expected 9410/TCP only")
        peers = scraper.get("from", [])
        if len(peers) != 1 or set(peers[0]) != {"namespaceSelector", "podSelector"} or not all(
                sel.get("matchLabels") for sel in peers[0].values()):
            errors.append(f"{name}: the scraper must be one peer with a namespace and a pod selector "
                          f"(both must match), found {peers}")
    return errors


# --- promtool ---------------------------------------------------------------------------------

def promtool(rule: dict, test_file: pathlib.Path, command: str) -> subprocess.CompletedProcess:
    """`promtool check rules` or `promtool test rules` on the groups of the PrometheusRule,
    written as ddprun_rules.yaml beside a copy of `test_file`."""
    exe = shutil.which("promtool")
    assert exe, "promtool is not on PATH (Debian: apt-get install prometheus)"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "ddprun_rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        shutil.copy(test_file, tmp / test_file.name)
        target = "ddprun_rules.yaml" if command == "check" else test_file.name
        return subprocess.run([exe, command, "rules", target], cwd=tmp, capture_output=True, text=True)


class Manifests:
    def __init__(self):
        self.jobs = [k8s_jobs.load_job(REPO, f) for f in k8s_jobs.JOB_FILES]
        self.runtime = load(REPO / "k8s" / "trainingruntime.yaml")
        self.service = load(MONITORING / "service.yaml")
        self.service_monitor = load(MONITORING / "servicemonitor.yaml")
        self.pod_monitor = load(MONITORING / "podmonitor.yaml")
        self.rule = load(MONITORING / "prometheusrule.yaml")
        self.policies = k8s_jobs.load_all(REPO / "k8s" / "networkpolicy.yaml")

    def job(self, name: str) -> dict:
        return next(j for j in self.jobs if j["metadata"]["name"] == name)


def _set(doc: dict, path: list, value) -> dict:
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


MASTER_C = ["spec", "pytorchReplicaSpecs", "Master", "template", "spec", "containers", 0]
MPI_WORKER_C = ["spec", "mpiReplicaSpecs", "Worker", "template", "spec", "containers", 0]
RUNTIME_C = ["spec", "template", "spec", "replicatedJobs", 0, "template", "spec", "template", "spec", "containers", 0]


class MonitoringTest(unittest.TestCase):
    def assert_reported(self, cases, check):
        """Each case (what, mutate, needle): `check` on freshly loaded manifests that
        `mutate` broke returns an error containing `needle`."""
        for what, mutate, needle in cases:
            with self.subTest(broken=what):
                m = Manifests()
                mutate(m)
                errors = check(m)
                self.assertTrue(any(needle in e for e in errors), f"{what}: {errors}")
                print(f"reported ({what}): {errors[0][:160]}")

    def test_every_serving_pod_has_the_port_env_and_probes(self):
        m = Manifests()
        for job in m.jobs:
            with self.subTest(job=job["metadata"]["name"]):
                self.assertEqual(pod_errors(job, m.runtime), [])
        print(f"{sum(len(serving_pods(j, m.runtime)) for j in m.jobs)} pod templates serve port metrics "
              f"9410 with their probes")

    def test_broken_pods_are_reported(self):
        cases = [  # (what, mutate(manifests), expected in an error)
            ("port renamed",
             lambda m: _set(m.job("ddprun-cpu"), MASTER_C + ["ports", 1, "name"], "prom"), "no container port"),
            ("liveness after 30 s",
             lambda m: _set(m.job("ddprun-gpu"), MASTER_C + ["livenessProbe", "failureThreshold"], 1),
             "liveness window"),
            ("startup shorter than the rendezvous",
             lambda m: _set(m.job("ddprun-cpu"), MASTER_C + ["startupProbe", "failureThreshold"], 30),
             "startup window"),
            ("master ready only after the rendezvous",
             lambda m: _set(m.job("ddprun-cpu"), MASTER_C + ["readinessProbe", "httpGet", "path"], "/readyz"),
             "readinessProbe"),
            ("env port differs",
             lambda m: _set(m.job("ddprun-elastic"), ["spec", "pytorchReplicaSpecs", "Worker", "template", "spec",
                                                      "containers", 0, "env", 1, "value"], "9411"),
             "DDPRUN_METRICS_PORT"),
            ("MPI worker with an HTTP liveness probe",
             lambda m: _set(m.job("ddprun-mpi"), MPI_WORKER_C + ["livenessProbe"],
                            {"httpGet": {"path": "/healthz", "port": "metrics"}}), "livenessProbe"),
            ("MPI port not forwarded",
             lambda m: _set(m.job("ddprun-mpi"), ["spec", "mpiReplicaSpecs", "Launcher", "template", "spec",
                                                  "containers", 0, "args"],
                            [a for a in m.job("ddprun-mpi")["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]
                             ["spec"]["containers"][0]["args"] if a != "DDPRUN_METRICS_PORT"]), "-x"),
            ("runtime without the port",
             lambda m: _set(m.runtime, RUNTIME_C + ["ports"], None), "no container port"),
        ]
        self.assert_reported(cases, lambda m: [e for job in m.jobs for e in pod_errors(job, m.runtime)])

    def test_monitors_select_and_label_every_serving_pod(self):
        m = Manifests()
        self.assertEqual(scrape_errors(m.jobs, m.runtime, m.service, m.service_monitor, m.pod_monitor), [])
        rules = m.pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
        pods = [(p, j) for j in m.jobs for p in metrics_pods(j)]
        print(f"{len(pods)} pods relabeled, e.g. " + ", ".join(
            f"{p.name}={relabel(rules, operator_pod_labels(p, j))}" for p, j in pods if p.index == 0))

    def test_broken_monitors_are_reported(self):
        relabelings = ["spec", "podMetricsEndpoints", 0, "relabelings"]
        cases = [
            ("index from a label no operator sets", lambda m: _set(
                m.pod_monitor, relabelings + [5, "sourceLabels"],
                ["__meta_kubernetes_pod_label_training_kubeflow_org_index"]), "relabeled"),
            ("job-role after replica-type", lambda m: m.pod_monitor["spec"]["podMetricsEndpoints"][0][
                "relabelings"].insert(4, m.pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"].pop(2)),
             "ddprun-elastic-worker-0: relabeled"),  # Worker 0 is the elastic job's master role
            ("ServiceMonitor relabels otherwise", lambda m: _set(
                m.service_monitor, ["spec", "endpoints", 0, "relabelings"], []), "relabel differently"),
            ("Service selects a label the TrainJob's pods lack", lambda m: _set(
                m.service, ["spec", "selector"], {"training.kubeflow.org/operator-name": "pytorchjob-controller"}),
             "ddprun-trainjob"),
            ("Service publishes Ready pods only", lambda m: _set(
                m.service, ["spec", "publishNotReadyAddresses"], None), "publishNotReadyAddresses"),
            ("PodMonitor every minute", lambda m: _set(
                m.pod_monitor, ["spec", "podMetricsEndpoints", 0, "interval"], "60s"), "every 60s"),
        ]
        self.assert_reported(cases, lambda m: scrape_errors(m.jobs, m.runtime, m.service, m.service_monitor,
                                                            m.pod_monitor))

    def test_network_policies_admit_the_scraper_to_9410_only(self):
        m = Manifests()
        self.assertEqual(network_policy_errors(m.policies), [])
        peers = m.policies[0]["spec"]["ingress"][1]
        cases = [
            ("every port", lambda m: m.policies[0]["spec"]["ingress"][1].pop("ports"), "may reach None"),
            ("namespace OR pods", lambda m: m.policies[0]["spec"]["ingress"][1].update(
                {"from": [{"namespaceSelector": peers["from"][0]["namespaceSelector"]},
                          {"podSelector": peers["from"][0]["podSelector"]}]}), "one peer"),
            ("the job's rule widened", lambda m: m.policies[0]["spec"]["ingress"][0].update(
                {"from": [{"podSelector": {}}]}), "expected its job's pods"),
        ]
        self.assert_reported(cases, lambda m: network_policy_errors(m.policies))

    def promtool_passes(self, command: str) -> tuple[Manifests, subprocess.CompletedProcess]:
        m = Manifests()
        out = promtool(m.rule, HERE / "prometheus_rules_test.yaml", command)
        print(out.stdout, end="")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        return m, out

    def test_promtool_checks_the_rules(self):
        m, out = self.promtool_passes("check")
        self.assertIn("SUCCESS: 3 rules found", out.stdout)
        alerts = {r["alert"] for g in m.rule["spec"]["groups"] for r in g["rules"]}
        self.assertEqual(alerts, {"DdprunNoStepProgress", "DdprunRestarting", "DdprunStraggler"})
        rule = m.rule["spec"]["groups"][0]["rules"][0]
        rule["expr"] = rule["expr"].replace("max by", "max bye")
        out = promtool(m.rule, HERE / "prometheus_rules_test.yaml", "check")
        self.assertNotEqual(out.returncode, 0)
        print(f"rejected (a typo in the expression): {(out.stdout + out.stderr).strip().splitlines()[-1][:160]}")

    def test_promtool_unit_tests_fire_and_stay_silent(self):
        self.promtool_passes("test")
        # The unit tests can fail: a threshold of 100 minutes never fires, and a restart
        # alert over 5 minutes has forgotten the restart by 10m.
        for old, new, alert in (("> 600", "> 6000", "DdprunNoStepProgress"),
                                ("[15m]", "[4m]", "DdprunRestarting")):
            with self.subTest(broken=old):
                broken = Manifests().rule
                for r in broken["spec"]["groups"][0]["rules"]:
                    r["expr"] = r["expr"].replace(old, new)
                out = promtool(broken, HERE / "prometheus_rules_test.yaml", "test")
                self.assertNotEqual(out.returncode, 0, out.stdout)
                self.assertIn(f"alertname: {alert}", out.stdout + out.stderr)
                print(f"failed as it should ({old} -> {new}): {alert}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
