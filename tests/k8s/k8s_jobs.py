"""What the operators make of our manifests, for the tests in this folder.

Reads the job manifests in k8s/ and, for every replica (pod) of every job, builds what the
operator would give that pod's training container: the environment it injects (as written
down in ../shared/k8s-env-contract.md, with the operators' source lines cited there), the
pod and service names, and the container's own command, args and env from the manifest.

Image paths in a command (/opt/ddprun/bin/ddprun, /etc/ddprun/ddptrain.yaml, /checkpoints,
/data) are mapped to files on this machine by `map_paths`, so that the tests run the
manifests' own command lines with the binaries of the build tree.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import re

import yaml

# The image's install layout (docker/Dockerfile.cpu and docker/Dockerfile.cuda); the
# consistency test checks that the Dockerfiles create exactly these.
IMAGE_DDPRUN = "/opt/ddprun/bin/ddprun"
IMAGE_DDPTRAIN = "/opt/ddprun/bin/ddptrain"
IMAGE_LIB_DIR = "/opt/ddprun/lib"
IMAGE_CONFIG = "/etc/ddprun/ddptrain.yaml"
IMAGE_DATA_DIR = "/data"
IMAGE_CHECKPOINT_DIR = "/checkpoints"
IMAGE_USER_HOME = "/home/ddprun"
IMAGE_UID = 1000
MPI_HOSTFILE = "/etc/mpi/hostfile"  # mounted by mpi-operator on the launcher

PYTORCHJOB_DEFAULT_PORT = 23456  # training-operator pytorch_types.go
TRAINER_MASTER_PORT = 29500      # trainer constants.go

# The label that carries the job's own name on every pod its operator creates (the
# checkpoint directory is derived from it through the downward API):
# - training-operator release-1.9 (078ec30f) pkg/apis/kubeflow.org/v1/common_types.go:34;
# - mpi-operator (caa3c47f) pkg/apis/kubeflow/v2beta1/constants.go:42, set on the launcher
#   and the workers by defaultLabels, pkg/controller/mpi_job_controller.go:1772-1777;
# - JobSet v0.12.0 (f22e565a, Trainer v2.3.0's go.mod) api/jobset/v1alpha2/jobset_types.go:24,
#   put on every pod template by pkg/controllers/jobset_controller.go:950,1020; the JobSet
#   has the TrainJob's name.
OPERATOR_JOB_LABEL = {"PyTorchJob": "training.kubeflow.org/job-name",
                      "MPIJob": "training.kubeflow.org/job-name",
                      "TrainJob": "jobset.sigs.k8s.io/jobset-name"}

JOB_FILES = ["pytorchjob-cpu.yaml", "pytorchjob-gpu.yaml", "pytorchjob-elastic.yaml", "mpijob.yaml",
             "trainjob.yaml"]
CORE_FILES = ["checkpoints-pvc.yaml", "networkpolicy.yaml"]
RUNTIME_FILES = ["trainingruntime.yaml"]  # the TrainJob's ClusterTrainingRuntime
# k8s/monitoring/: prometheus-operator kinds and the Service that servicemonitor.yaml scrapes.
MONITORING_FILES = ["monitoring/podmonitor.yaml", "monitoring/service.yaml", "monitoring/servicemonitor.yaml",
                    "monitoring/prometheusrule.yaml"]


def load_all(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_job(repo: pathlib.Path, name: str) -> dict:
    (doc,) = load_all(repo / "k8s" / name)
    return doc


@dataclasses.dataclass
class Pod:
    """One replica of a job as the operator creates it."""
    job: str
    kind: str
    role: str               # master, worker, launcher, node
    index: int
    name: str               # pod (and, for PyTorchJob, headless service) name
    hostname: str           # the name other pods reach it by
    container: dict         # the training container of the manifest
    operator_env: dict      # what the operator injects
    template: dict          # the pod template (spec)

    @property
    def labels(self) -> dict:
        """The pod's labels: the template's plus the job-name label its operator adds
        (OPERATOR_JOB_LABEL)."""
        labels = dict(self.template.get("metadata", {}).get("labels", {}))
        labels[OPERATOR_JOB_LABEL[self.kind]] = self.job
        return labels

    @property
    def env(self) -> dict:
        """The container's env: the manifest's (a downward-API fieldRef resolved against
        this pod's name and labels), then the operator's appended after it."""
        env = {}
        for e in self.container.get("env", []):
            ref = e.get("valueFrom", {}).get("fieldRef")
            env[e["name"]] = self.field(ref["fieldPath"]) if ref else str(e.get("value", ""))
        env.update(self.operator_env)
        return env

    def field(self, path: str) -> str:
        """A downward-API fieldPath: metadata.name or metadata.labels['KEY'] (the kubelet
        gives an empty string for a label the pod does not have)."""
        if path == "metadata.name":
            return self.name
        m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        assert m, f"fieldPath {path!r} is not modelled here"
        return self.labels.get(m.group(1), "")

    @property
    def argv(self) -> list[str]:
        """command + args after the kubelet's $(VAR) expansion against the container's env
        (k8s.io/kubernetes third_party/forked/golang/expansion: $(VAR) of a defined
        variable is replaced, $$ is a literal $, anything else stays as written)."""
        return [expand(a, self.env) for a in
                list(self.container.get("command", [])) + list(self.container.get("args", []))]


def expand(text: str, env: dict) -> str:
    def one(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def _container(template: dict, name: str | None) -> dict:
    containers = template["spec"]["containers"]
    if name is None:
        return containers[0]
    matches = [c for c in containers if c["name"] == name]
    assert matches, f"no container named {name!r}"
    return matches[0]


def _is_int(text: str) -> bool:
    return str(text).isdigit()


def pytorchjob_pods(job: dict) -> list[Pod]:
    """PyTorchJob (training-operator v1.9, envvar.go setPodEnv): every pod gets
    MASTER_ADDR/PET_MASTER_ADDR = <job>-master-0, MASTER_PORT/PET_MASTER_PORT = the
    master's pytorchjob-port, WORLD_SIZE = pods x nprocPerNode (1 if not an integer),
    RANK = PET_NODE_RANK = the pod rank (master 0, worker i -> i+1), PET_NNODES = pods,
    PET_NPROC_PER_NODE = nprocPerNode (default "auto"), PYTHONUNBUFFERED=1.
    With an elasticPolicy (elastic.go) PET_NNODES is "<min>:<max>" and the PET_RDZV_*
    variables come on top; without a Master there is no MASTER_*, RANK, WORLD_SIZE or
    PET_NODE_RANK (shared/k8s-env-contract.md)."""
    name = job["metadata"]["name"]
    specs = job["spec"]["pytorchReplicaSpecs"]
    nproc = str(job["spec"].get("nprocPerNode", "auto"))
    total = sum(int(s.get("replicas", 1)) for s in specs.values())
    world = total * (int(nproc) if _is_int(nproc) else 1)
    master_env = {}
    if "Master" in specs:
        master_container = _container(specs["Master"]["template"], "pytorch")
        port = next((p["containerPort"] for p in master_container.get("ports", [])
                     if p.get("name") == "pytorchjob-port"), PYTORCHJOB_DEFAULT_PORT)
        master_env = {"MASTER_ADDR": f"{name}-master-0", "PET_MASTER_ADDR": f"{name}-master-0",
                      "MASTER_PORT": str(port), "PET_MASTER_PORT": str(port), "WORLD_SIZE": str(world)}
    elastic = _elastic_env(job)
    pods = []
    rank = 0
    for rtype in ["Master", "Worker"]:
        spec = specs.get(rtype)
        if spec is None:
            continue
        for i in range(int(spec.get("replicas", 1))):
            pod_name = f"{name}-{rtype.lower()}-{i}"
            env = {"PYTHONUNBUFFERED": "1", **master_env, "PET_NPROC_PER_NODE": nproc,
                   "PET_NNODES": str(total)}
            if master_env:
                env.update({"RANK": str(rank), "PET_NODE_RANK": str(rank)})
            env.update(elastic)
            pods.append(Pod(name, "PyTorchJob", rtype.lower(), i, pod_name, pod_name,
                            _container(spec["template"], "pytorch"), env, spec["template"]))
            rank += 1
    return pods


def _elastic_env(job: dict) -> dict:
    """elastic.go ElasticEnvVarGenerator.Generate: {} without an elasticPolicy."""
    policy = job["spec"].get("elasticPolicy")
    if policy is None:
        return {}
    name = job["metadata"]["name"]
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    port = policy.get("rdzvPort") or next(
        (p["containerPort"] for p in _container(worker["template"], "pytorch").get("ports", [])
         if p.get("name") == "pytorchjob-port"), PYTORCHJOB_DEFAULT_PORT)
    env = {"PET_RDZV_ENDPOINT": f"{policy.get('rdzvHost', f'{name}-worker-0')}:{port}",
           "PET_RDZV_BACKEND": policy.get("rdzvBackend", "c10d")}
    # Defaulting (pytorch_defaults.go setElasticPolicy) fills min and max from each other
    # or from Worker.replicas, so the range form is what pods see.
    low = policy.get("minReplicas", policy.get("maxReplicas", worker.get("replicas", 1)))
    high = policy.get("maxReplicas", low)
    env["PET_NNODES"] = f"{low}:{high}"
    if "maxRestarts" in policy:
        env["PET_MAX_RESTARTS"] = str(policy["maxRestarts"])
    if "nProcPerNode" in policy:
        env["PET_NPROC_PER_NODE"] = str(policy["nProcPerNode"])
    if "rdzvId" in policy:
        env["PET_RDZV_ID"] = policy["rdzvId"]
    if policy.get("rdzvConf"):
        env["PET_RDZV_CONF"] = ",".join(f"{c['key']}={c['value']}" for c in policy["rdzvConf"])
    if policy.get("standalone"):
        env["PET_STANDALONE"] = ""
    return env


def trainjob_pods(job: dict) -> list[Pod]:
    """Trainer v2 torch runtime (torch.go): PET_NNODES = numNodes, PET_NPROC_PER_NODE =
    numProcPerNode, PET_NODE_RANK = the Job completion index, PET_MASTER_ADDR =
    <trainjob>-node-0-0.<trainjob>, PET_MASTER_PORT = 29500. No MASTER_ADDR, RANK or
    WORLD_SIZE. The container named node gets image, command, args and env of
    spec.trainer."""
    name = job["metadata"]["name"]
    trainer = job["spec"]["trainer"]
    nnodes = int(trainer.get("numNodes", 1))
    container = {"name": "node", "image": trainer["image"],
                 "command": trainer.get("command", []), "args": trainer.get("args", []),
                 "env": trainer.get("env", [])}
    pods = []
    for i in range(nnodes):
        pod_name = f"{name}-node-0-{i}"
        env = {
            "PET_NNODES": str(nnodes),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": str(i),
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
            "PET_MASTER_PORT": str(TRAINER_MASTER_PORT),
        }
        pods.append(Pod(name, "TrainJob", "node", i, pod_name, f"{pod_name}.{name}",
                        container, env, {"spec": {"containers": [container]}}))
    return pods


def command_pods(job: dict) -> list[Pod]:
    """The pods whose container runs the manifest's training command: every pod of a
    PyTorchJob or TrainJob, the launcher (mpirun) of an MPIJob."""
    if job["kind"] == "PyTorchJob":
        return pytorchjob_pods(job)
    if job["kind"] == "TrainJob":
        return trainjob_pods(job)
    return [mpijob_launcher(job)[0]]


def mpijob_launcher(job: dict, namespace: str = "default") -> tuple[Pod, str]:
    """mpi-operator v2beta1: the launcher's env (first container) and the hostfile it
    mounts at /etc/mpi/hostfile: `<job>-worker-<i>.<job>.<ns>.svc slots=<slotsPerWorker>`."""
    name = job["metadata"]["name"]
    spec = job["spec"]
    slots = int(spec.get("slotsPerWorker", 1))
    workers = int(spec["mpiReplicaSpecs"]["Worker"].get("replicas", 1))
    env = {
        "K_MPI_JOB_ROLE": "launcher",
        "OMPI_MCA_orte_keep_fqdn_hostnames": "true",
        "OMPI_MCA_orte_default_hostfile": MPI_HOSTFILE,
        "OMPI_MCA_plm_rsh_args": "-o ConnectionAttempts=10",
        "OMPI_MCA_orte_set_default_slots": str(slots),
        "NVIDIA_VISIBLE_DEVICES": "",
        "NVIDIA_DRIVER_CAPABILITIES": "",
    }
    template = spec["mpiReplicaSpecs"]["Launcher"]["template"]
    launcher = Pod(name, "MPIJob", "launcher", 0, f"{name}-launcher", f"{name}-launcher",
                   _container(template, None), env, template)
    hostfile = "".join(f"{name}-worker-{i}.{name}.{namespace}.svc slots={slots}\n"
                       for i in range(workers))
    return launcher, hostfile


# mpirun options that take a value (Open MPI 4 and 5 spellings used in manifests).
_MPIRUN_VALUE_OPTIONS = {"--hostfile", "-hostfile", "--machinefile", "-machinefile", "-np",
                         "-n", "--np", "--n", "-c", "--bind-to", "-bind-to", "--map-by",
                         "-map-by", "-x", "--rank-by", "-H", "--host", "-host",
                         "--report-bindings-file", "--prefix", "-wdir", "--wdir"}
_MPIRUN_TWO_VALUE_OPTIONS = {"--mca", "-mca", "--gmca", "-gmca", "--prtemca", "--pmixmca"}


def split_mpirun(argv: list[str]) -> tuple[list[str], list[str]]:
    """Splits `mpirun OPTIONS PROGRAM ARGS` into (mpirun and its options, program argv)."""
    assert os.path.basename(argv[0]) in ("mpirun", "mpiexec"), argv
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in _MPIRUN_TWO_VALUE_OPTIONS:
            i += 3
        elif a in _MPIRUN_VALUE_OPTIONS:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            break
    return argv[:i], argv[i:]


def mpirun_option(argv: list[str], name: str) -> list[str]:
    """Values of an mpirun option that takes one value, in order."""
    options, _ = split_mpirun(argv)
    return [options[i + 1] for i, a in enumerate(options[:-1]) if a == name]


def mpijob_rank_envs(job: dict) -> list[dict]:
    """What each rank sees under mpirun (Open MPI, one node per worker pod, ranks mapped
    by slot): OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE,NODE_RANK}, plus what
    mpirun forwards with -x from the launcher's env (and every OMPI_* variable)."""
    spec = job["spec"]
    slots = int(spec.get("slotsPerWorker", 1))
    workers = int(spec["mpiReplicaSpecs"]["Worker"].get("replicas", 1))
    launcher, _ = mpijob_launcher(job)
    forwarded = {}
    for item in mpirun_option(launcher.argv, "-x"):
        key, _, value = item.partition("=")
        forwarded[key] = value if "=" in item else launcher.env.get(key, "")
    size = workers * slots
    envs = []
    for rank in range(size):
        env = dict(forwarded)
        env.update({k: v for k, v in launcher.env.items() if k.startswith("OMPI_")})
        env.update({
            "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(size),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(rank % slots),
            "OMPI_COMM_WORLD_LOCAL_SIZE": str(slots),
            "OMPI_COMM_WORLD_NODE_RANK": str(rank // slots),
            "OMPI_UNIVERSE_SIZE": str(size),
        })
        envs.append(env)
    return envs


def split_ddprun(argv: list[str]) -> tuple[list[str], list[str]]:
    """Splits `ddprun OPTIONS -- PROGRAM ARGS` at the `--` (the manifests always write it)."""
    assert os.path.basename(argv[0]) == "ddprun", argv
    assert "--" in argv, f"the manifest's ddprun command has no '--': {argv}"
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def ddprun_option(argv: list[str], name: str) -> str | None:
    launcher, _ = split_ddprun(argv)
    for i, a in enumerate(launcher):
        if a == name and i + 1 < len(launcher):
            return launcher[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def map_paths(argv: list[str], mapping: dict[str, str]) -> list[str]:
    """Replaces image paths by host paths: an argument equal to a key, or starting with
    key + '/', gets the key replaced (longest key first)."""
    keys = sorted(mapping, key=len, reverse=True)
    out = []
    for a in argv:
        for k in keys:
            if a == k or a.startswith(k.rstrip("/") + "/"):
                a = mapping[k] + a[len(k):]
                break
        out.append(a)
    return out


def deep_copy(doc: dict) -> dict:
    return copy.deepcopy(doc)


def render(repo: pathlib.Path, resources: list[str], components: list[str] = (), **fields) -> list[dict]:
    """`kubectl kustomize` of a copy of k8s/ whose kustomization lists `resources` (files of
    k8s/), `components` (folders under k8s/components/) and any other top-level field
    (namePrefix=..., nameSuffix=...). Returns the rendered documents."""
    import shutil
    import subprocess
    import tempfile
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is not on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp) / "k8s"
        shutil.copytree(repo / "k8s", tmp)
        k = yaml.safe_load((tmp / "kustomization.yaml").read_text())
        k["resources"] = list(resources)
        if components:
            k["components"] = [f"components/{c}" for c in components]
        k.update(fields)
        (tmp / "kustomization.yaml").write_text(yaml.safe_dump(k))
        out = subprocess.run([kubectl, "kustomize", str(tmp)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]


def pod_templates(doc: dict, runtimes: dict | None = None) -> list[tuple[str, dict]]:
    """(where, pod template) of every pod a job document creates. A TrainJob's pod is its
    runtime's replicated Job "node" template with the TrainJob's runtime patch laid over it
    (Trainer v2.3.0 mergeRuntimePatches: the patch's pod fields replace the runtime's, its
    containers and volumes merge by name) and the trainer's image, command, args and env in
    the container named node. A ClusterTrainingRuntime's own template is listed as well."""
    spec = doc.get("spec", {})
    for key in ("pytorchReplicaSpecs", "mpiReplicaSpecs"):
        if key in spec:
            return [(f"{doc['kind']}/{doc['metadata']['name']} {rtype}", rs["template"])
                    for rtype, rs in spec[key].items()]
    if doc["kind"] == "ClusterTrainingRuntime":
        return [(f"{doc['kind']}/{doc['metadata']['name']} {rj['name']}", rj["template"]["spec"]["template"])
                for rj in spec["template"]["spec"]["replicatedJobs"]]
    if doc["kind"] == "TrainJob":
        runtime = (runtimes or {})[spec["runtimeRef"]["name"]]
        out = []
        for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
            template = copy.deepcopy(rj["template"]["spec"]["template"])
            pod = template.setdefault("spec", {})
            for patch in spec.get("runtimePatches", []):
                for prj in patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get(
                        "replicatedJobs", []):
                    if prj["name"] != rj["name"]:
                        continue
                    ppod = prj.get("template", {}).get("spec", {}).get("template", {}).get("spec", {})
                    for field, value in ppod.items():
                        if field in ("containers", "initContainers", "volumes"):
                            by_name = {c["name"]: c for c in pod.get(field, [])}
                            for item in value:
                                by_name.setdefault(item["name"], {}).update(item)
                            pod[field] = list(by_name.values())
                        else:
                            pod[field] = copy.deepcopy(value)
            trainer = spec.get("trainer", {})
            for c in pod.get("containers", []):
                if c["name"] == "node":
                    for field in ("image", "command", "args", "env"):
                        if field in trainer:
                            c[field] = copy.deepcopy(trainer[field])
            out.append((f"TrainJob/{doc['metadata']['name']} {rj['name']}", template))
        return out
    return []
