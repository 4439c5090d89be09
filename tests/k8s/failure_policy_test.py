"""What each operator does with a failed pod, given the restart settings of k8s/.

ddprun's contract (shared/DESIGN.md, "Exit codes"): 1-127 permanent, 128-255 retryable.

- PyTorchJob (training-operator release-1.9, 078ec30f): restartPolicy ExitCode on every
  replica. runPolicy.backoffLimit is not honoured there: a retryable exit deletes the pod
  and creates a new one (pkg/controller.v1/common/pod.go:352-366), and the limit sums the
  container restarts of Running pods only (pkg/core/job.go:95-131; kubeflow/trainer#2045),
  which stay 0. So the manifests set no backoffLimit, and bound the job with
  runPolicy.activeDeadlineSeconds, which the operator enforces (pkg/core/job.go:82-91,
  pkg/controller.v1/common/job.go:211).
- MPIJob (mpi-operator caa3c47f, pkg/controller/mpi_job_controller.go): a worker pod is
  created only while absent (:1016-1022), so a Failed worker is never replaced: workers
  restart in place (OnFailure); the launcher Job retries mpirun up to backoffLimit
  (:1568-1569) and has a deadline.
- TrainJob (Trainer v2.3.0 on JobSet v0.12.0): the runtime's Job podFailurePolicy and JobSet
  failurePolicy, evaluated here as Kubernetes' Job controller and JobSet's
  pkg/controllers/failure_policy.go do, must fail the JobSet on 1-127, restart it on
  128-255, and neither count nor fail on a disruption (eviction, preemption).
- The TrainJob and its runtime against Trainer v2.3.0's whole CRDs: required fields and
  enums are enforced (broken copies rejected).

Usage: failure_policy_test.py REPO_DIR   (shared/ is REPO_DIR/../shared)
"""
from __future__ import annotations

import copy
import os
import pathlib
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO_ARG = sys.argv[1] if len(sys.argv) > 1 else "."
import manifest_schema_test  # noqa: E402  (takes REPO_DIR off argv)
import k8s_jobs  # noqa: E402

REPO = pathlib.Path(REPO_ARG).resolve()
DESIGN = REPO.parent / "shared" / "DESIGN.md"
PERMANENT = range(1, 128)
RETRYABLE = range(128, 256)

# kubernetes-sigs/jobset v0.12.0 (f22e565a) pkg/webhooks/jobset_webhook.go:85-91 and the rule
# name pattern of api/jobset/v1alpha2/jobset_types.go:444-446.
JOBSET_FAILURE_REASONS = {"BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded",
                          "PodFailurePolicy"}
JOBSET_RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def runtime_node(runtime: dict) -> tuple[dict, dict]:
    """(the JobSet spec, the replicated Job "node")."""
    js = runtime["spec"]["template"]["spec"]
    (rj,) = [r for r in js["replicatedJobs"] if r["name"] == "node"]
    return js, rj


def job_pod_failure(job_spec: dict, exit_code: int | None, conditions: dict) -> str:
    """The Job controller's verdict on one failed pod (Kubernetes Job API, podFailurePolicy:
    the first matching rule wins; no match counts against backoffLimit). Returns 'FailJob'
    (reason PodFailurePolicy), 'Ignore' (replaced, not counted), 'BackoffLimitExceeded' or
    'replaced' (counted, within the limit)."""
    for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
        if "onExitCodes" in rule:
            req = rule["onExitCodes"]
            if exit_code in (None, 0):
                continue
            values = set(req["values"])
            hit = exit_code in values if req["operator"] == "In" else exit_code not in values
        else:
            hit = any(conditions.get(p["type"]) == p.get("status", "True") for p in rule["onPodConditions"])
        if hit:
            if rule["action"] == "Count":
                break
            return rule["action"]
    return "BackoffLimitExceeded" if 1 > job_spec.get("backoffLimit", 6) else "replaced"


def jobset_verdict(js: dict, job_reason: str) -> str:
    """JobSet v0.12.0 executeFailurePolicy (failure_policy.go:47-78): no failurePolicy fails
    the JobSet; else the first rule whose reasons contain the Job's reason, else
    RestartJobSet."""
    policy = js.get("failurePolicy")
    if policy is None:
        return "FailJobSet"
    for rule in policy.get("rules", []):
        if not rule.get("onJobFailureReasons") or job_reason in rule["onJobFailureReasons"]:
            return rule["action"]
    return "RestartJobSet"


def trainjob_outcome(runtime: dict, exit_code: int | None, disrupted: bool = False) -> str:
    js, rj = runtime_node(runtime)
    verdict = job_pod_failure(rj["template"]["spec"], exit_code,
                              {"DisruptionTarget": "True"} if disrupted else {})
    if verdict == "FailJob":
        return jobset_verdict(js, "PodFailurePolicy")
    if verdict == "BackoffLimitExceeded":
        return jobset_verdict(js, "BackoffLimitExceeded")
    return verdict  # Ignore or replaced: the Job goes on


class FailurePolicyTest(unittest.TestCase):
    def test_design_contract(self):
        text = " ".join(DESIGN.read_text().split())
        self.assertIn("permanent (1-127", text)
        self.assertIn("retryable (128-255", text)

    def test_pytorchjob_is_bounded_by_a_deadline_not_by_backoff_limit(self):
        for name in ("pytorchjob-cpu.yaml", "pytorchjob-gpu.yaml", "pytorchjob-elastic.yaml"):
            with self.subTest(job=name):
                job = k8s_jobs.load_job(REPO, name)
                policies = {rs["restartPolicy"] for rs in job["spec"]["pytorchReplicaSpecs"].values()}
                self.assertEqual(policies, {"ExitCode"})
                run = job["spec"]["runPolicy"]
                self.assertNotIn("backoffLimit", run, "ignored under ExitCode (pkg/core/job.go:115)")
                self.assertIsInstance(run.get("activeDeadlineSeconds"), int)
                self.assertGreater(run["activeDeadlineSeconds"], 0)
                # ddptrain's own budget across recreated pods stays on (its default, 3)
                for pod in k8s_jobs.pytorchjob_pods(job):
                    argv = pod.argv
                    if "--max-stalled-restarts" in argv:
                        self.assertNotEqual(argv[argv.index("--max-stalled-restarts") + 1], "0")

    def test_mpijob_restart_settings(self):
        job = k8s_jobs.load_job(REPO, "mpijob.yaml")
        specs = job["spec"]["mpiReplicaSpecs"]
        # a Failed worker pod is never recreated: restart it in place
        self.assertEqual(specs["Worker"]["restartPolicy"], "OnFailure")
        self.assertIn(specs["Launcher"]["restartPolicy"], ("OnFailure", "Never"))
        run = job["spec"]["runPolicy"]
        self.assertIsInstance(run.get("backoffLimit"), int)
        self.assertGreater(run["backoffLimit"], 0)
        self.assertIsInstance(run.get("activeDeadlineSeconds"), int)

    def test_trainjob_runtime_failure_policy(self):
        (runtime,) = k8s_jobs.load_all(REPO / "k8s/trainingruntime.yaml")
        js, rj = runtime_node(runtime)
        pod = rj["template"]["spec"]["template"]["spec"]
        # podFailurePolicy needs Never (else JobSet defaults OnFailure and restarts in place)
        self.assertEqual(pod.get("restartPolicy"), "Never")
        containers = {c["name"] for c in pod["containers"]}
        for rule in rj["template"]["spec"]["podFailurePolicy"]["rules"]:
            if "onExitCodes" in rule:
                self.assertIn(rule["onExitCodes"]["containerName"], containers)
        for rule in js["failurePolicy"]["rules"]:
            self.assertRegex(rule["name"], JOBSET_RULE_NAME)
            self.assertLessEqual(set(rule.get("onJobFailureReasons", [])), JOBSET_FAILURE_REASONS)
        self.assertGreater(js["failurePolicy"]["maxRestarts"], 0)
        for code in PERMANENT:
            self.assertEqual(trainjob_outcome(runtime, code), "FailJobSet", code)
        for code in RETRYABLE:
            self.assertEqual(trainjob_outcome(runtime, code), "RestartJobSet", code)
        # evicted or preempted: the pod is replaced and nothing is counted, whatever it exited with
        for code in (143, 2, None):
            self.assertEqual(trainjob_outcome(runtime, code, disrupted=True), "Ignore")

    def test_without_the_policies_a_permanent_error_is_retried(self):
        """The model can fail: JobSet's defaults (OnFailure pods, backoffLimit 6) restart in place."""
        (runtime,) = k8s_jobs.load_all(REPO / "k8s/trainingruntime.yaml")
        bare = copy.deepcopy(runtime)
        js, rj = runtime_node(bare)
        del js["failurePolicy"]
        del rj["template"]["spec"]["podFailurePolicy"]
        del rj["template"]["spec"]["backoffLimit"]
        self.assertEqual(trainjob_outcome(bare, 2), "replaced")
        js2, rj2 = runtime_node(copy.deepcopy(runtime))
        rj2["template"]["spec"]["podFailurePolicy"]["rules"] = rj2["template"]["spec"]["podFailurePolicy"]["rules"][:1]
        self.assertEqual(trainjob_outcome({"spec": {"template": {"spec": js2}}}, 2), "RestartJobSet")

    def test_trainjob_needs_trainer_2_3_and_tolerates_gpu_nodes(self):
        text = (REPO / "k8s/trainjob.yaml").read_text()
        self.assertIn("v2.3.0 or later", text)
        job = k8s_jobs.load_job(REPO, "trainjob.yaml")
        pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
            "template"]["spec"]["template"]["spec"]
        self.assertIn({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, pod["tolerations"])
        self.assertIn("terminationGracePeriodSeconds", pod)  # the v2.3.0 field

    def test_trainjob_and_runtime_against_the_whole_crds(self):
        v = manifest_schema_test.VALIDATORS
        job = k8s_jobs.load_job(REPO, "trainjob.yaml")
        (runtime,) = k8s_jobs.load_all(REPO / "k8s/trainingruntime.yaml")
        self.assertEqual(v.errors(job), [])
        self.assertEqual(v.errors(runtime), [])
        # The CRD's CEL rules (x-kubernetes-validations), which jsonschema does not run: the name
        # of a TrainJob, and at most one framework in the runtime's mlPolicy.
        name = job["metadata"]["name"]
        self.assertRegex(name, r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
        self.assertLessEqual(len(name), 63)
        frameworks = {"torch", "mpi", "jax", "xgboost", "flux"}
        self.assertLessEqual(len(frameworks & set(runtime["spec"]["mlPolicy"])), 1)

        def broken(doc, mutate):
            doc = copy.deepcopy(doc)
            mutate(doc)
            return v.errors(doc)

        js = ["spec", "template", "spec"]

        def at(doc, path):
            for k in path:
                doc = doc[k]
            return doc

        cases = [
            ("TrainJob without spec.runtimeRef (required)", job, lambda d: d["spec"].pop("runtimeRef"), "runtimeRef"),
            ("runtimeRef without name (required)", job, lambda d: d["spec"]["runtimeRef"].pop("name"), "name"),
            ("a pod field a runtime patch does not have", job,
             lambda d: d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
                 "template"]["spec"]["template"]["spec"].update(priorityClassName="x"), "priorityClassName"),
            ("JobSet rule action outside its enum", runtime,
             lambda d: at(d, js)["failurePolicy"]["rules"][0].update(action="Fail"), "Fail"),
            ("JobSet rule without action (required)", runtime,
             lambda d: at(d, js)["failurePolicy"]["rules"][0].pop("action"), "action"),
            ("restartStrategy outside its enum", runtime,
             lambda d: at(d, js)["failurePolicy"].update(restartStrategy="InPlace"), "InPlace"),
            ("pod failure rule without action (required)", runtime,
             lambda d: at(d, js)["replicatedJobs"][0]["template"]["spec"]["podFailurePolicy"]["rules"][1].pop(
                 "action"), "action"),
            ("misspelt failurePolicy field", runtime,
             lambda d: at(d, js)["failurePolicy"].update(maxRestart=1), "maxRestart"),
        ]
        for what, doc, mutate, needle in cases:
            with self.subTest(broken=what):
                errors = broken(doc, mutate)
                self.assertTrue(any(needle in e for e in errors), f"{what}: {errors}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
