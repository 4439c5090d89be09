"""Validates every manifest in k8s/ against the schema its API server would use.

- PyTorchJob and MPIJob: the CRDs' OpenAPI v3 schemas in ../shared/k8s-schemas/ (verbatim
  copies of the operators' CRDs), applied the way `kubectl apply` does by default (server-
  side strict field validation: an unknown field is an error), plus the operators'
  admission-webhook rules that a schema cannot express (replica types, restart policies,
  the Master's single replica, the container named pytorch, the job name).
- TrainJob and ClusterTrainingRuntime: Trainer v2.3.0's CRDs in ../shared/k8s-schemas/,
  whole (the runtime patches' pod and container fields are the CRD's own short lists).
- ServiceMonitor, PodMonitor (../shared/k8s-schemas/) and PrometheusRule (schemas/ beside
  this file, the same prometheus-operator release v0.93.0): monitoring.coreos.com/v1.
- Core kinds (PersistentVolumeClaim, NetworkPolicy, Service) and every replica's pod template (as a
  core PodTemplate): the Kubernetes API schemas that kubernetes-validate ships, strict.
- The kustomization's output (`kubectl kustomize`) passes the same checks, with the image,
  replicas and resources it sets.
- Deliberately broken copies of the manifests are rejected, each with an error that names
  the offending field: the checks can fail.

Usage: manifest_schema_test.py REPO_DIR   (the shared/ folder is REPO_DIR/../shared)
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

import jsonschema
import kubernetes_validate
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

CHECK_MODE = len(sys.argv) > 1 and sys.argv[1] == "--check"
if CHECK_MODE:
    sys.argv.pop(1)
REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
SCHEMAS = REPO.parent / "shared" / "k8s-schemas"
# CRDs that shared/ does not hold, copied verbatim the same way (schemas/README.md).
LOCAL_SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.33.0"  # any 1.2x-1.3x: the fields used here are long stable


def strict_schema(schema):
    """An apiextensions structural schema as a JSON schema that rejects unknown fields
    (what kubectl's default --validate=strict does on the server) and understands
    x-kubernetes-int-or-string."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_validator(path: pathlib.Path, version: str) -> jsonschema.Draft4Validator:
    (crd,) = k8s_jobs.load_all(path)
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict_schema(v["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def webhook_errors(doc: dict) -> list[str]:
    """The operators' validating webhooks (training-operator pytorchjob_webhook.go,
    mpi-operator validation.go), as summarised in shared/k8s-env-contract.md."""
    errors = []
    name = doc.get("metadata", {}).get("name", "")
    if not DNS1035.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = doc.get("spec", {})
    if doc["kind"] == "PyTorchJob":
        specs = spec.get("pytorchReplicaSpecs", {})
        for rtype, rs in specs.items():
            if rtype not in ("Master", "Worker"):
                errors.append(f"spec.pytorchReplicaSpecs.{rtype}: replica type is Master or Worker")
            if rs.get("restartPolicy", "OnFailure") not in ("Always", "OnFailure", "Never", "ExitCode"):
                errors.append(f"spec.pytorchReplicaSpecs.{rtype}.restartPolicy {rs.get('restartPolicy')!r}")
            names = [c.get("name") for c in rs.get("template", {}).get("spec", {}).get("containers", [])]
            if "pytorch" not in names:
                errors.append(f"spec.pytorchReplicaSpecs.{rtype}: no container named pytorch ({names})")
        if "Master" in specs and specs["Master"].get("replicas", 1) != 1:
            errors.append("spec.pytorchReplicaSpecs.Master.replicas must be 1")
        if "Worker" in specs and specs["Worker"].get("replicas", 1) < 1:
            errors.append("spec.pytorchReplicaSpecs.Worker.replicas must be >= 1")
        nproc = str(spec.get("nprocPerNode", "auto"))
        if not (nproc.isdigit() or nproc in ("auto", "cpu", "gpu")):
            errors.append(f"spec.nprocPerNode {nproc!r}: an integer, auto, cpu or gpu")
        elastic = spec.get("elasticPolicy")
        if elastic is not None:
            low, high = elastic.get("minReplicas"), elastic.get("maxReplicas")
            if low is not None and high is not None and low > high:
                errors.append(f"spec.elasticPolicy.minReplicas {low} is above maxReplicas {high}")
            if "nProcPerNode" in elastic and "nprocPerNode" in spec:
                errors.append("spec.elasticPolicy.nProcPerNode and spec.nprocPerNode are both set")
            if elastic.get("rdzvBackend", "c10d") not in ("c10d", "etcd", "etcd-v2"):
                errors.append(f"spec.elasticPolicy.rdzvBackend {elastic['rdzvBackend']!r}: c10d, etcd or etcd-v2")
    elif doc["kind"] == "MPIJob":
        specs = spec.get("mpiReplicaSpecs", {})
        if set(specs) != {"Launcher", "Worker"}:
            errors.append(f"spec.mpiReplicaSpecs: expected Launcher and Worker, found {sorted(specs)}")
        for rtype, rs in specs.items():
            if rs.get("restartPolicy", "Never") not in ("Never", "OnFailure"):
                errors.append(f"spec.mpiReplicaSpecs.{rtype}.restartPolicy {rs.get('restartPolicy')!r}: "
                              "Never or OnFailure")
        if specs.get("Launcher", {}).get("replicas", 1) != 1:
            errors.append("spec.mpiReplicaSpecs.Launcher.replicas must be 1")
        if specs.get("Worker", {}).get("replicas", 1) < 1:
            errors.append("spec.mpiReplicaSpecs.Worker.replicas must be >= 1")
    return errors


def core_errors(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return [f"{doc['kind']}: {'.'.join(map(str, e.path))}: {e.message}"]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    spec = doc.get("spec", {})
    for key in ("pytorchReplicaSpecs", "mpiReplicaSpecs"):
        if key in spec:
            return [(f"spec.{key}.{rtype}.template", rs.get("template", {}))
                    for rtype, rs in spec[key].items()]
    return []


def schema_errors(validator: jsonschema.Draft4Validator, doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


class Validators:
    def __init__(self):
        self.by_kind = {
            ("kubeflow.org/v1", "PyTorchJob"): crd_validator(SCHEMAS / "kubeflow.org_pytorchjobs.yaml", "v1"),
            ("kubeflow.org/v2beta1", "MPIJob"): crd_validator(SCHEMAS / "kubeflow.org_mpijobs.yaml", "v2beta1"),
        }
        # Kinds whose CRD schema is the whole check (no webhook rules that we rely on).
        self.crd_only = {
            ("trainer.kubeflow.org/v1alpha1", "TrainJob"):
                crd_validator(SCHEMAS / "trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
            ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"):
                crd_validator(SCHEMAS / "trainer.kubeflow.org_clustertrainingruntimes.yaml", "v1alpha1"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"):
                crd_validator(SCHEMAS / "monitoring.coreos.com_servicemonitors.yaml", "v1"),
            ("monitoring.coreos.com/v1", "PodMonitor"):
                crd_validator(SCHEMAS / "monitoring.coreos.com_podmonitors.yaml", "v1"),
            ("monitoring.coreos.com/v1", "PrometheusRule"):
                crd_validator(LOCAL_SCHEMAS / "monitoring.coreos.com_prometheusrules.yaml", "v1"),
        }

    def errors(self, doc: dict) -> list[str]:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in self.by_kind:
            errors = schema_errors(self.by_kind[key], doc) + webhook_errors(doc)
            for where, template in pod_templates(doc):
                errors += [f"{where}: {e}" for e in core_errors(
                    {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                     "template": template})]
            return errors
        if key in self.crd_only:
            return schema_errors(self.crd_only[key], doc)
        if doc.get("apiVersion") in ("v1", "networking.k8s.io/v1"):
            return core_errors(doc)
        return [f"no schema for {key}"]


VALIDATORS = Validators()


def all_manifests() -> list[tuple[str, dict]]:
    docs = []
    for name in k8s_jobs.JOB_FILES + k8s_jobs.CORE_FILES + k8s_jobs.RUNTIME_FILES + k8s_jobs.MONITORING_FILES:
        for doc in k8s_jobs.load_all(REPO / "k8s" / name):
            docs.append((name, doc))
    return docs


class ManifestSchemaTest(unittest.TestCase):
    def test_schema_copies_are_the_recorded_blobs(self):
        # Each folder's README.md records the git blob id of each of its CRDs.
        for folder in (SCHEMAS, LOCAL_SCHEMAS):
            readme = (folder / "README.md").read_text()
            for path in sorted(folder.glob("*.yaml")):
                blob = subprocess.run(["git", "hash-object", str(path)], check=True,
                                      capture_output=True, text=True).stdout.strip()
                self.assertIn(blob, readme, f"{path}: blob {blob} is not the one recorded")

    def test_every_manifest_is_valid(self):
        docs = all_manifests()
        kinds = sorted({d["kind"] for _, d in docs})
        self.assertEqual(kinds, ["ClusterTrainingRuntime", "MPIJob", "NetworkPolicy", "PersistentVolumeClaim",
                                 "PodMonitor", "PrometheusRule", "PyTorchJob", "Service", "ServiceMonitor",
                                 "TrainJob"])
        for name, doc in docs:
            with self.subTest(manifest=name, kind=doc["kind"], name=doc["metadata"]["name"]):
                self.assertEqual(VALIDATORS.errors(doc), [])
        print(f"{len(docs)} manifests valid: " + ", ".join(
            f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in docs))

    def test_broken_copies_are_rejected(self):
        """Each mutation below is a mistake a user could make; each must be reported,
        naming the field."""
        def job(name):
            return k8s_jobs.load_job(REPO, name)

        def monitor(name):
            (doc,) = k8s_jobs.load_all(REPO / "k8s" / "monitoring" / name)
            return doc

        def set_in(doc, path, value):
            node = doc
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            return doc

        def rename(doc, path, new_key):
            node = doc
            for k in path[:-1]:
                node = node[k]
            node[new_key] = node.pop(path[-1])
            return doc

        master = ["spec", "pytorchReplicaSpecs", "Master"]
        cases = [
            ("replicas as a string", set_in(job("pytorchjob-cpu.yaml"), master + ["replicas"], "one"), "replicas"),
            ("misspelt field", rename(job("pytorchjob-cpu.yaml"), ["spec", "runPolicy"], "runPolicies"),
             "runPolicies"),
            ("unknown replica type", rename(job("pytorchjob-gpu.yaml"), master, "Chief"), "Chief"),
            ("restart policy", set_in(job("pytorchjob-cpu.yaml"), master + ["restartPolicy"], "Sometimes"),
             "Sometimes"),
            ("two masters", set_in(job("pytorchjob-cpu.yaml"), master + ["replicas"], 2), "Master.replicas"),
            ("container not named pytorch",
             set_in(job("pytorchjob-cpu.yaml"), master + ["template", "spec", "containers", 0, "name"], "main"),
             "pytorch"),
            ("port as text", set_in(job("pytorchjob-cpu.yaml"),
                                    master + ["template", "spec", "containers", 0, "ports", 0, "containerPort"],
                                    "port"), "containerPort"),
            ("unknown container field", set_in(job("pytorchjob-gpu.yaml"),
                                               master + ["template", "spec", "containers", 0, "cmd"], ["x"]), "cmd"),
            ("bad quantity", set_in(job("pytorchjob-gpu.yaml"),
                                    master + ["template", "spec", "containers", 0, "resources", "limits", "cpu"],
                                    "lots"), "lots"),
            ("job name", set_in(job("pytorchjob-cpu.yaml"), ["metadata", "name"], "DDP_run"), "DNS-1035"),
            ("elastic range upside down",
             set_in(job("pytorchjob-elastic.yaml"), ["spec", "elasticPolicy", "minReplicas"], 5), "minReplicas"),
            ("MPI implementation", set_in(job("mpijob.yaml"), ["spec", "mpiImplementation"], "OpenMPI5"),
             "OpenMPI5"),
            ("MPIJob ExitCode", set_in(job("mpijob.yaml"), ["spec", "mpiReplicaSpecs", "Worker", "restartPolicy"],
                                       "ExitCode"), "ExitCode"),
            ("slots as text", set_in(job("mpijob.yaml"), ["spec", "slotsPerWorker"], "1"), "slotsPerWorker"),
            # v2.3.0's CRD and webhook accept numProcPerNode 0 (a minimum came later); a type is checked.
            ("TrainJob numProcPerNode as text",
             set_in(job("trainjob.yaml"), ["spec", "trainer", "numProcPerNode"], "4"), "numProcPerNode"),
            ("TrainJob without runtimeRef", rename(job("trainjob.yaml"), ["spec", "runtimeRef"], "runtime"),
             "runtime"),
            ("TrainJob patches a container's image",
             set_in(job("trainjob.yaml"), ["spec", "runtimePatches", 0, "trainingRuntimeSpec", "template", "spec",
                                           "replicatedJobs", 0, "template", "spec", "template", "spec",
                                           "containers", 0, "image"], "x"), "image"),
            ("runtime probe port as a list",
             set_in(job("trainingruntime.yaml"), ["spec", "template", "spec", "replicatedJobs", 0, "template",
                                                  "spec", "template", "spec", "containers", 0, "livenessProbe",
                                                  "httpGet", "port"], ["metrics"]), "port"),
            ("runtime field misspelt", rename(job("trainingruntime.yaml"), ["spec", "mlPolicy"], "mlpolicy"),
             "mlpolicy"),
            ("ServiceMonitor interval in words",
             set_in(monitor("servicemonitor.yaml"), ["spec", "endpoints", 0, "interval"], "15 seconds"),
             "15 seconds"),
            ("ServiceMonitor misspelt relabel field",
             rename(monitor("servicemonitor.yaml"), ["spec", "endpoints", 0, "relabelings", 0, "targetLabel"],
                    "target_label"), "target_label"),
            ("PodMonitor endpoints under the ServiceMonitor's name",
             rename(monitor("podmonitor.yaml"), ["spec", "podMetricsEndpoints"], "endpoints"), "endpoints"),
            ("PrometheusRule for: in words",
             set_in(monitor("prometheusrule.yaml"), ["spec", "groups", 0, "rules", 0, "for"], "2 minutes"),
             "2 minutes"),
            ("PrometheusRule rule without expr",
             rename(monitor("prometheusrule.yaml"), ["spec", "groups", 0, "rules", 1, "expr"], "expression"),
             "expr"),
            ("Service port as text", set_in(monitor("service.yaml"), ["spec", "ports", 0, "port"], "metrics"),
             "port"),
            ("PVC access mode", set_in(k8s_jobs.load_all(REPO / "k8s/checkpoints-pvc.yaml")[0],
                                       ["spec", "accessModes"], "ReadWriteMany"), "accessModes"),
            ("NetworkPolicy field", set_in(k8s_jobs.load_all(REPO / "k8s/networkpolicy.yaml")[0],
                                           ["spec", "ingres"], []), "ingres"),
        ]
        for what, doc, needle in cases:
            with self.subTest(broken=what):
                errors = VALIDATORS.errors(doc)
                self.assertTrue(errors, f"{what}: accepted")
                self.assertTrue(any(needle in e for e in errors), f"{what}: {errors}")
                print(f"rejected ({what}): {errors[0][:150]}")

    def test_broken_file_fails_the_command_line_check(self):
        # The same check as a program over files (what the README tells users to run)
        # exits non-zero on a broken copy and zero on the originals.
        with tempfile.TemporaryDirectory() as tmp:
            good = subprocess.run([sys.executable, __file__, "--check", str(REPO),
                                   str(REPO / "k8s/pytorchjob-cpu.yaml")], capture_output=True, text=True)
            self.assertEqual(good.returncode, 0, good.stdout + good.stderr)
            broken = pathlib.Path(tmp) / "pytorchjob-cpu.yaml"
            text = (REPO / "k8s/pytorchjob-cpu.yaml").read_text()
            broken.write_text(text.replace("restartPolicy: ExitCode", "restartPolicy: ExitCodes", 1)
                              .replace("claimName:", "claimname:", 1))
            bad = subprocess.run([sys.executable, __file__, "--check", str(REPO), str(broken)],
                                 capture_output=True, text=True)
            self.assertEqual(bad.returncode, 1, bad.stdout + bad.stderr)
            self.assertIn("ExitCodes", bad.stdout)
            self.assertIn("claimname", bad.stdout)

    def test_manifest_choices_are_consistent(self):
        """What the comments promise: ExitCode on every PyTorchJob replica; the pod's
        grace period longer than ddprun's; GPU limits equal to processes per pod; every
        job mounts the checkpoint claim and writes to its own subdirectory of it; a
        NetworkPolicy per job that admits only that job's pods."""
        (pvc,) = k8s_jobs.load_all(REPO / "k8s/checkpoints-pvc.yaml")
        (policy,) = k8s_jobs.load_all(REPO / "k8s/networkpolicy.yaml")
        (runtime,) = k8s_jobs.load_all(REPO / "k8s/trainingruntime.yaml")
        runtime_pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
        for name in k8s_jobs.JOB_FILES:
            doc = k8s_jobs.load_job(REPO, name)
            job = doc["metadata"]["name"]
            with self.subTest(job=job):
                pods = k8s_jobs.command_pods(doc)
                for pod in pods:
                    argv = pod.argv
                    self.assertIn(f"/checkpoints/{job}", argv)
                    if doc["kind"] != "MPIJob":
                        grace = float(k8s_jobs.ddprun_option(argv, "--grace-period"))
                        if doc["kind"] == "TrainJob":
                            tgps = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
                                "replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
                                "terminationGracePeriodSeconds"]
                        else:
                            tgps = pod.template["spec"]["terminationGracePeriodSeconds"]
                        self.assertGreaterEqual(tgps, grace + 30, "no time left to checkpoint")
                if doc["kind"] == "PyTorchJob":
                    nproc = int(doc["spec"]["nprocPerNode"])
                    for rtype, rs in doc["spec"]["pytorchReplicaSpecs"].items():
                        self.assertEqual(rs["restartPolicy"], "ExitCode", rtype)
                        c = rs["template"]["spec"]["containers"][0]
                        gpus = c["resources"].get("limits", {}).get("nvidia.com/gpu")
                        if gpus is not None:
                            self.assertEqual(int(gpus), nproc, f"{rtype}: GPUs != nprocPerNode")
                        claims = [v["persistentVolumeClaim"]["claimName"] for v in rs["template"]["spec"]["volumes"]
                                  if "persistentVolumeClaim" in v]
                        self.assertEqual(claims, [pvc["metadata"]["name"]])
                if doc["kind"] == "MPIJob":
                    w = doc["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
                    self.assertEqual(int(w["resources"]["limits"]["nvidia.com/gpu"]),
                                     doc["spec"]["slotsPerWorker"])
                if doc["kind"] == "TrainJob":
                    self.assertEqual(int(doc["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"]),
                                     doc["spec"]["trainer"]["numProcPerNode"])
                # The policy selects every pod of the job by a label of its template (the
                # runtime's for a TrainJob), not by the job's name; its first rule admits
                # those pods, the second the scraper (monitoring_test.py checks that one).
                selector = policy["spec"]["podSelector"]["matchLabels"]
                templates = ([runtime_pod] if doc["kind"] == "TrainJob" else
                             [rs["template"] for rs in next(v for k, v in doc["spec"].items()
                                                            if k.endswith("ReplicaSpecs")).values()])
                for template in templates:
                    self.assertEqual({k: template["metadata"]["labels"].get(k) for k in selector}, selector)
        self.assertNotIn("training.kubeflow.org/job-name", str(policy))
        self.assertNotIn("jobset.sigs.k8s.io/jobset-name", str(policy))
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(policy["spec"]["ingress"][0], {"from": [{"podSelector": policy["spec"]["podSelector"]}]})

    def test_kustomization_output_is_valid_and_applies_its_settings(self):
        kubectl = shutil.which("kubectl")
        self.assertIsNotNone(kubectl, "kubectl (with its built-in kustomize) is not on PATH")
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file), tempfile.TemporaryDirectory() as tmp:
                tmp = pathlib.Path(tmp)
                for f in (REPO / "k8s").glob("*.yaml"):
                    shutil.copy(f, tmp / f.name)
                k = yaml.safe_load((tmp / "kustomization.yaml").read_text())
                # The TrainJob comes with its runtime, as the kustomization's comment says.
                runtime = k8s_jobs.RUNTIME_FILES if job_file == "trainjob.yaml" else []
                k["resources"] = k8s_jobs.CORE_FILES + runtime + [job_file]
                for p in k["patches"]:  # ask for 5 worker pods
                    p["patch"] = re.sub(r"value: 2$", "value: 5", p["patch"], flags=re.M)
                (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
                out = subprocess.run([kubectl, "kustomize", str(tmp)], capture_output=True, text=True)
                self.assertEqual(out.returncode, 0, out.stderr)
                docs = [d for d in yaml.safe_load_all(out.stdout) if d]
                policies = k8s_jobs.load_all(REPO / "k8s/networkpolicy.yaml")
                # the claim, the policies, the runtime, the job
                self.assertEqual(len(docs), 1 + len(policies) + len(runtime) + 1)
                for doc in docs:
                    self.assertEqual(VALIDATORS.errors(doc), [], doc["kind"])
                (job,) = [d for d in docs if d["kind"] in ("PyTorchJob", "MPIJob", "TrainJob")]
                images = re.findall(r"'image': '([^']+)'", str(docs))
                self.assertEqual(len(images), len(re.findall(r"^ *(?:- )?image:", "".join(
                    (REPO / "k8s" / f).read_text() for f in runtime + [job_file]), flags=re.M)))
                for image in images:
                    self.assertRegex(image, r"^registry\.example\.com/ml/ddprun-(cpu|cuda):0\.1\.0$")
                replicas = {"PyTorchJob": lambda d: d["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"],
                            "MPIJob": lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"],
                            "TrainJob": lambda d: d["spec"]["trainer"]["numNodes"]}[job["kind"]](job)
                self.assertEqual(replicas, 5)

    def test_monitoring_kustomization_output_is_valid(self):
        # k8s/monitoring/ on its own (it needs prometheus-operator's CRDs, k8s/ does not):
        # what it lists, and the Service route it offers in a comment, each valid.
        kubectl = shutil.which("kubectl")
        self.assertIsNotNone(kubectl, "kubectl (with its built-in kustomize) is not on PATH")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            shutil.copytree(REPO / "k8s" / "monitoring", tmp, dirs_exist_ok=True)
            text = (tmp / "kustomization.yaml").read_text()
            service_route = text.replace("  # - service", "  - service").replace("  - podmonitor", "  # - podmonitor")
            for route, kinds in ((text, ["PodMonitor", "PrometheusRule"]),
                                 (service_route, ["PrometheusRule", "Service", "ServiceMonitor"])):
                (tmp / "kustomization.yaml").write_text(route)
                out = subprocess.run([kubectl, "kustomize", str(tmp)], capture_output=True, text=True)
                self.assertEqual(out.returncode, 0, out.stderr)
                docs = [d for d in yaml.safe_load_all(out.stdout) if d]
                self.assertEqual(sorted(d["kind"] for d in docs), kinds)
                for doc in docs:
                    self.assertEqual(VALIDATORS.errors(doc), [], doc["kind"])


def check_files(files: list[str]) -> int:
    """`manifest_schema_test.py --check REPO FILE...`: prints every error, exit 1 if any."""
    failed = 0
    for f in files:
        for doc in k8s_jobs.load_all(pathlib.Path(f)):
            errors = VALIDATORS.errors(doc)
            for e in errors:
                print(f"{f}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {e}")
            failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    if CHECK_MODE:
        sys.exit(check_files(sys.argv[1:]))
    unittest.main(verbosity=2)
