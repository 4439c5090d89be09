"""What `kubectl kustomize` makes of k8s/ when a user renames a job or adds a component.

- Renaming (namePrefix, nameSuffix): every job's checkpoint directory is its own name,
  read from the operator's job-name label through the downward API (DDPRUN_JOB_NAME) and
  expanded by the kubelet in the args, so the renamed job writes to /checkpoints/<new
  name>; the claim and the TrainJob's runtime are renamed and the jobs follow them; the
  NetworkPolicy still selects the renamed job's pods.
- The optional components of k8s/components/ (kind: Component): each renders with every
  job and sets what it promises (PodDisruptionBudget, PriorityClass, GPU node affinity,
  Volcano gang scheduling, Kueue queue), and each rendered object is valid (the API
  schemas of kubernetes-validate for the core kinds).

Usage: kustomize_test.py REPO_DIR
"""
from __future__ import annotations

import os
import pathlib
import sys
import unittest

import kubernetes_validate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
JOB_KINDS = ("PyTorchJob", "MPIJob", "TrainJob")


def render_job(job_file: str, components=(), **fields) -> list[dict]:
    runtime = k8s_jobs.RUNTIME_FILES if job_file == "trainjob.yaml" else []
    return k8s_jobs.render(REPO, k8s_jobs.CORE_FILES + runtime + [job_file], components, **fields)


def job_of(docs: list[dict]) -> dict:
    (job,) = [d for d in docs if d["kind"] in JOB_KINDS]
    return job


def templates(docs: list[dict]) -> list[tuple[str, dict]]:
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterTrainingRuntime"}
    return [t for d in docs if d["kind"] in JOB_KINDS for t in k8s_jobs.pod_templates(d, runtimes)]


class RenameTest(unittest.TestCase):
    def test_checkpoint_dir_follows_a_renamed_job(self):
        for job_file in k8s_jobs.JOB_FILES:
            original = job_of(render_job(job_file))["metadata"]["name"]
            for fields in ({"namePrefix": "team-"}, {"nameSuffix": "-v2"}):
                with self.subTest(job=job_file, **fields):
                    docs = render_job(job_file, **fields)
                    job = job_of(docs)
                    name = job["metadata"]["name"]
                    self.assertEqual(name, fields.get("namePrefix", "") + original + fields.get("nameSuffix", ""))
                    for pod in k8s_jobs.command_pods(job):
                        env = {e["name"]: e for e in pod.container["env"]}
                        self.assertEqual(env["DDPRUN_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
                                         f"metadata.labels['{k8s_jobs.OPERATOR_JOB_LABEL[job['kind']]}']")
                        self.assertIn("/checkpoints/$(DDPRUN_JOB_NAME)", pod.container["args"])
                        # what the kubelet runs: the operator's label, expanded into the args
                        self.assertIn(f"/checkpoints/{name}", pod.argv)
                        self.assertNotIn(f"/checkpoints/{original}", pod.argv)

    def test_claim_runtime_and_policy_follow_a_renamed_job(self):
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file):
                docs = render_job(job_file, namePrefix="team-")
                (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
                (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
                self.assertEqual(pvc["metadata"]["name"], "team-ddprun-checkpoints")
                pods = templates(docs)
                self.assertTrue(pods)
                for where, t in pods:
                    claims = [v["persistentVolumeClaim"]["claimName"] for v in t["spec"].get("volumes", [])
                              if "persistentVolumeClaim" in v]
                    if "Launcher" not in where:  # the MPIJob launcher mounts no checkpoints
                        self.assertEqual(claims, ["team-ddprun-checkpoints"], where)
                    labels = t["metadata"]["labels"]
                    for k, v in policy["spec"]["podSelector"]["matchLabels"].items():
                        self.assertEqual(labels.get(k), v, where)
                job = job_of(docs)
                if job["kind"] == "TrainJob":
                    (runtime,) = [d for d in docs if d["kind"] == "ClusterTrainingRuntime"]
                    self.assertEqual(job["spec"]["runtimeRef"]["name"], runtime["metadata"]["name"])
                    self.assertEqual(runtime["metadata"]["name"], "team-ddprun-torch-distributed")


class ComponentsTest(unittest.TestCase):
    def test_each_component_is_a_component(self):
        found = sorted(p.name for p in (REPO / "k8s/components").iterdir() if p.is_dir())
        self.assertEqual(found, ["gpu-node-pool", "kueue", "pdb", "priority-class", "volcano"])
        for name in found:
            (k,) = k8s_jobs.load_all(REPO / "k8s/components" / name / "kustomization.yaml")
            self.assertEqual((k["apiVersion"], k["kind"]), ("kustomize.config.k8s.io/v1alpha1", "Component"))

    def check_core(self, doc):
        kubernetes_validate.validate(doc, "1.33.0", strict=True)

    def renders(self, component: str):
        """The rendered documents of each job with `component`, under a namePrefix."""
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file, component=component):
                yield render_job(job_file, [component], namePrefix="team-")

    def test_pdb(self):
        for docs in self.renders("pdb"):
            (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
            self.check_core(pdb)
            self.assertIsInstance(pdb["spec"]["minAvailable"], int)  # custom-resource owners: integers only
            self.assertNotIn("maxUnavailable", pdb["spec"])
            for where, t in templates(docs):
                for k, v in pdb["spec"]["selector"]["matchLabels"].items():
                    self.assertEqual(t["metadata"]["labels"].get(k), v, where)

    def test_priority_class(self):
        for docs in self.renders("priority-class"):
            (pc,) = [d for d in docs if d["kind"] == "PriorityClass"]
            self.check_core(pc)
            self.assertEqual(pc["metadata"]["name"], "team-ddprun-training")
            for where, t in templates(docs):
                self.assertEqual(t["spec"].get("priorityClassName"), pc["metadata"]["name"], where)

    def test_gpu_node_pool(self):
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file):
                for where, t in templates(render_job(job_file, ["gpu-node-pool"])):
                    terms = (t["spec"].get("affinity", {}).get("nodeAffinity", {})
                             .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms"))
                    if "Launcher" in where:
                        self.assertIsNone(terms, where)  # mpirun needs no GPU
                    else:
                        self.assertEqual(terms, [{"matchExpressions": [
                            {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]}], where)

    def test_volcano(self):
        for docs in self.renders("volcano"):
            (pg,) = [d for d in docs if d["kind"] == "PodGroup"]
            self.assertEqual(pg["apiVersion"], "scheduling.volcano.sh/v1beta1")
            self.assertEqual(pg["metadata"]["name"], "team-ddprun")
            self.assertIsInstance(pg["spec"]["minMember"], int)
            for where, t in templates(docs):
                self.assertEqual(t["spec"].get("schedulerName"), "volcano", where)
                self.assertEqual(t["metadata"]["annotations"]["scheduling.k8s.io/group-name"], "team-ddprun")

    def test_kueue(self):
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file):
                job = job_of(render_job(job_file, ["kueue"]))
                self.assertEqual(job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"], "ddprun")

    def test_all_components_together_render_valid_jobs(self):
        sys.argv.insert(1, str(REPO))  # manifest_schema_test takes REPO off argv at import
        import manifest_schema_test
        for job_file in k8s_jobs.JOB_FILES:
            with self.subTest(job=job_file):
                docs = render_job(job_file, ["gpu-node-pool", "kueue", "pdb", "priority-class", "volcano"])
                for doc in docs:
                    if doc["kind"] in ("PodGroup",):  # Volcano's CRD is not in shared/
                        continue
                    if doc["kind"] in ("PodDisruptionBudget", "PriorityClass"):
                        self.check_core(doc)
                        continue
                    self.assertEqual(manifest_schema_test.VALIDATORS.errors(doc), [], doc["kind"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
