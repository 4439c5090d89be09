"""What a pod's scraper, probes, Trainer and terminal see of a run (Notes [Metrics page],
[Metrics endpoint] and [TrainJob progress] in runtime/metrics/, [Status line] in
runtime/log/logging.h), end to end with real processes on loopback:

- test_prometheus_scrapes_a_two_rank_run: a real Prometheus (Debian's) scrapes ddprun's
  /metrics every second during a 2-rank run; its HTTP API has ddprun_step for rank 0 and 1,
  rising. Prints the query and its answer.
- test_scraped_page_passes_promtool: the page passes `promtool check metrics` with no lint
  problem; /healthz and /readyz are 200 while training, and before the rendezvous is done
  (a node of two waiting for the other) /healthz is 200 and /readyz 503. Shares the run of
  the test above.
- test_trainjob_progress_reaches_the_trainer_server: tests/support/trainjob_status_server.py
  (Trainer v2.3.0's status server: TLS, bearer token, the CRD's validation, --strict) gets
  rank 0's progress every 5 s or more and a final 100 %. Prints one accepted body.
- test_a_down_or_slow_trainer_server_never_stops_training: a closed port costs a warning,
  a server that answers after 20 s costs at most the reporter's timeouts at exit.
- test_python_script_reports_through_the_metrics_file: tests/launcher/metrics_worker.py
  writes $DDPRUN_METRICS_FILE; /metrics shows its steps and its process_* as role="worker".
- test_mpirun_without_ddprun_serves_from_local_rank_zero: mpirun -np 2 ddptrain with
  DDPRUN_METRICS_PORT: the node's local rank 0 serves both ranks' series (skipped without
  MPIEXEC).
- test_progress_bar_in_tmux: ddptrain alone and under ddprun draw the bar as the last line
  of a real terminal (tmux), log lines scrolling above it; --no-progress draws none. Prints
  the captured pane.
About 2 minutes on 2 cores.

Usage: metrics_test.py REPO_DIR DDPRUN DDPTRAIN PYTHON [MPIEXEC]
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

REPO = pathlib.Path(sys.argv.pop(1) if len(sys.argv) > 1 else ".").resolve()
DDPRUN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/launcher/ddprun")
DDPTRAIN = sys.argv.pop(1) if len(sys.argv) > 1 else str(REPO / "build/examples/ddptrain")
PYTHON = sys.argv.pop(1) if len(sys.argv) > 1 else sys.executable
MPIEXEC = sys.argv.pop(1) if len(sys.argv) > 1 else ""

STATUS_SERVER = REPO / "tests/support/trainjob_status_server.py"
METRICS_WORKER = REPO / "tests/launcher/metrics_worker.py"
# mlp on Fashion-MNIST with a small batch: about 100-300 steps/s on 2 cores (2 ranks).
TRAIN = ["--model", "mlp", "--data", "idx", "--data-dir", "/usr/share/datasets/fashion-mnist",
         "--batch-size", "16", "--threads", "1"]
STATUS_PATH = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs/my-job/status"
TOKEN = "test-token-4711"
BAR = re.compile(r"epoch \d+/\d+ \[[#.]+\] step \d+/\d+ [\d.]+% \| \d+ samples/s \| loss [\d.]+ \| ETA")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 3) -> tuple[int, str]:
    """(status, body); (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def wait_for(what: str, predicate, timeout: float, interval: float = 0.25):
    """predicate()'s first true value, polled; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def parse_page(page: str) -> list[tuple[str, dict, str]]:
    """The samples of a Prometheus text page: (name, labels, value)."""
    samples = []
    for line in page.splitlines():
        m = SERIES.match(line)
        if m and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, m.group(3)))
    return samples


def ranks_of(page: str, metric: str, **labels: str) -> set[str]:
    return {l.get("rank") for name, l, _ in parse_page(page)
            if name == metric and all(l.get(k) == v for k, v in labels.items())}


class MetricsTest(unittest.TestCase):
    def workdir(self) -> pathlib.Path:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-metrics-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        return tmp

    def start(self, argv: list[str], log: pathlib.Path, env: dict | None = None) -> subprocess.Popen:
        """A process in a session of its own, its output in `log`; stopped (SIGTERM, then
        SIGKILL to its process group) at cleanup if still running."""
        out = open(log, "w")
        self.addCleanup(out.close)
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        self.addCleanup(stop, proc)
        return proc

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PET_", "MASTER_", "KUBEFLOW_TRAINER_", "DDPRUN_", "OMPI_"))}
        env.pop("RANK", None)
        env.pop("WORLD_SIZE", None)
        env.update(extra)
        return env

    def ddprun(self, port: int, *options: str) -> list[str]:
        return [DDPRUN, "--standalone", "--nproc-per-node", "2", "--metrics-port", str(port),
                "--metrics-host", "127.0.0.1", *options]

    # --- a 2-rank run under Prometheus (cases 1 and 2 share it) ---------------------------
    # setUpClass would hide its failures in a crowd; one run per method that needs it, made
    # once and kept on the class.
    _scraped = None

    def scraped_run(self) -> dict:
        if MetricsTest._scraped is None:
            MetricsTest._scraped = self.run_under_prometheus()
        return MetricsTest._scraped

    def run_under_prometheus(self) -> dict:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="ddprun-metrics-prom-"))
        metrics_port, prometheus_port = free_port(), free_port()
        result: dict = {"errors": []}
        logs = [open(tmp / "run.log", "w"), open(tmp / "prometheus.log", "w")]
        run = subprocess.Popen(self.ddprun(metrics_port) + ["--", DDPTRAIN, *TRAIN, "--max-steps", "100000",
                                                            "--log-every", "500"],
                               stdout=logs[0], stderr=subprocess.STDOUT,
                               env=self.env(), start_new_session=True)
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ddprun\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1/query?query="

        def query(q: str) -> list[dict]:
            code, body = http_get(api + urllib.parse.quote(q))
            return json.loads(body)["data"]["result"] if code == 200 else []

        url = f"http://127.0.0.1:{metrics_port}"
        try:
            wait_for("ddprun's /readyz 200 (training)", lambda: http_get(url + "/readyz")[0] == 200, 60)
            result["healthz"] = http_get(url + "/healthz")
            result["readyz"] = http_get(url + "/readyz")
            result["page"] = http_get(url + "/metrics")[1]
            wait_for("Prometheus ready", lambda: http_get(f"http://127.0.0.1:{prometheus_port}/-/ready")[0] == 200, 30)
            ranks = lambda: {r["metric"].get("rank") for r in query("ddprun_step")}  # noqa: E731
            wait_for("ddprun_step of ranks 0 and 1 in Prometheus", lambda: ranks() >= {"0", "1"}, 30)
            rise = "max_over_time(ddprun_step[1m]) > min_over_time(ddprun_step[1m])"
            rising = lambda: {r["metric"].get("rank") for r in query(rise)} >= {"0", "1"}  # noqa: E731
            try:
                wait_for("ddprun_step rising for both ranks", rising, 20)
            except AssertionError as e:
                result["errors"].append(str(e))
            result["queries"] = {q: query(q) for q in ("ddprun_step", rise, 'up{job="ddprun"}')}
            result["page_late"] = http_get(url + "/metrics")[1]
        except AssertionError as e:
            result["errors"].append(str(e))
        finally:
            for proc in (prometheus, run):
                stop(proc)
            for log in logs:
                log.close()
            result["run_log"] = (tmp / "run.log").read_text()
            result["prometheus_log"] = (tmp / "prometheus.log").read_text()[-3000:]
            shutil.rmtree(tmp, ignore_errors=True)
        return result

    def test_prometheus_scrapes_a_two_rank_run(self):
        run = self.scraped_run()
        context = "\n".join(run["errors"]) + "\n" + run["run_log"][-3000:] + "\n" + run["prometheus_log"]
        self.assertIn("queries", run, context)
        for q, answer in run["queries"].items():
            print(f"Prometheus /api/v1/query?query={q}\n  -> {json.dumps(answer)}", flush=True)
        self.assertEqual(run["errors"], [], context)
        steps = run["queries"]["ddprun_step"]
        self.assertEqual(sorted(r["metric"]["rank"] for r in steps), ["0", "1"], steps)
        for r in steps:
            self.assertEqual(r["metric"]["job"], "ddprun")
            self.assertGreater(float(r["value"][1]), 0)
        rise = run["queries"]["max_over_time(ddprun_step[1m]) > min_over_time(ddprun_step[1m])"]
        self.assertEqual(sorted(r["metric"]["rank"] for r in rise), ["0", "1"], rise)
        self.assertEqual([r["value"][1] for r in run["queries"]['up{job="ddprun"}']], ["1"])

    def test_scraped_page_passes_promtool(self):
        run = self.scraped_run()
        self.assertIn("page", run, "\n".join(run["errors"]) + run["run_log"][-3000:])
        self.assertEqual(run["healthz"][0], 200, run["healthz"])
        self.assertEqual(run["readyz"][0], 200, run["readyz"])
        for page in (run["page"], run["page_late"]):
            lint = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True,
                                  text=True, timeout=30)
            self.assertEqual((lint.returncode, lint.stdout + lint.stderr), (0, ""), page)
        page = run["page_late"]
        excerpt = [line for line in page.splitlines()
                   if re.match(r"(# (HELP|TYPE) )?(ddprun_step|ddprun_world_size|process_resident_memory_bytes)\b"
                               r"|ddprun_step_duration_seconds_(bucket\{rank=\"0\",le=\"0.05\"|count|sum)", line)]
        print("/metrics excerpt:\n  " + "\n  ".join(excerpt), flush=True)
        self.assertEqual(ranks_of(page, "ddprun_step"), {"0", "1"})
        self.assertEqual(ranks_of(page, "ddprun_step_duration_seconds_count"), {"0", "1"})
        self.assertEqual(ranks_of(page, "process_resident_memory_bytes", role="worker"), {"0", "1"})
        self.assertIn("ddprun_world_size 2", page.splitlines())

        # Before the rendezvous: node 0 of 2 waits for node 1, which never comes; with c10d
        # ddprun itself waits, with the static backend its workers wait in the TCPStore.
        tmp = self.workdir()
        answers = {}
        for backend in ("c10d", "static"):
            port = free_port()
            place = (["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "m"]
                     if backend == "c10d" else
                     ["--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port", str(free_port())])
            log = tmp / f"{backend}.log"
            waiting = self.start([DDPRUN, "--nnodes", "2", *place, "--nproc-per-node", "1",
                                  "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                                  "--", DDPTRAIN, *TRAIN, "--max-steps", "10"], log, self.env())
            url = f"http://127.0.0.1:{port}"
            healthz = wait_for("/healthz of a node waiting for its peer",
                               lambda: (lambda r: r if r[0] else None)(http_get(url + "/healthz")), 30)
            time.sleep(2)
            readyz = http_get(url + "/readyz")
            self.assertIsNone(waiting.poll(), log.read_text())
            waiting.send_signal(signal.SIGTERM)
            try:
                waiting.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            answers[backend] = {"healthz": healthz, "readyz": readyz, "exit after SIGTERM": waiting.poll()}
            if waiting.poll() is None:
                os.killpg(waiting.pid, signal.SIGKILL)
            stop(waiting)
        print(f"waiting for the rendezvous: {answers}", flush=True)
        self.assertEqual(answers["c10d"]["healthz"][0], 200, answers)
        self.assertEqual(answers["c10d"]["readyz"][0], 503, answers)
        self.assertEqual(answers["static"]["healthz"][0], 200, answers)
        self.assertIsNotNone(answers["static"]["exit after SIGTERM"], answers)
        self.assertIsNotNone(answers["c10d"]["exit after SIGTERM"],
                             f"ddprun waiting in the c10d rendezvous did not exit within 5 s of SIGTERM: {answers}")
        self.assertEqual(answers["static"]["readyz"][0], 503,
                         f"/readyz says ready while the only worker waits in the static rendezvous "
                         f"(no step, no metrics file yet): judgeReadiness counts a worker without a "
                         f"metrics file as started: {answers}")

    # --- TrainJob progress ----------------------------------------------------------------
    def status_server(self, tmp: pathlib.Path, *options: str) -> tuple[str, pathlib.Path, subprocess.Popen]:
        """(URL, requests.jsonl, process) of a status server with a fresh CA and token."""
        certs = tmp / "certs"
        subprocess.run([PYTHON, str(STATUS_SERVER), "gen-certs", str(certs)], check=True,
                       capture_output=True, timeout=60)
        (certs / "token").write_text(TOKEN + "\n")
        requests = tmp / "requests.jsonl"
        log = tmp / "status_server.log"
        server = self.start([PYTHON, "-u", str(STATUS_SERVER), "serve", "--certdir", str(certs),
                             "--port", "0", "--token-file", str(certs / "token"), "--out", str(requests),
                             "--strict", "--log-rejected", *options], log)
        first = wait_for("the status server's first line", lambda: log.read_text().split("\n")[0]
                         if "\n" in log.read_text() else None, 30)
        m = re.match(r"listening on (https://127\.0\.0\.1:\d+)(/\S+)$", first)
        self.assertIsNotNone(m, first)
        self.assertEqual(m.group(2), STATUS_PATH)
        return m.group(1) + STATUS_PATH, requests, server

    def trainer_env(self, url: str, tmp: pathlib.Path) -> dict:
        return self.env(KUBEFLOW_TRAINER_SERVER_URL=url,
                        KUBEFLOW_TRAINER_SERVER_CA_CERT=str(tmp / "certs/ca.crt"),
                        KUBEFLOW_TRAINER_SERVER_TOKEN=str(tmp / "certs/token"))

    def train(self, tmp: pathlib.Path, name: str, env: dict, steps: int) -> tuple[int, str, float]:
        """(exit code, log, seconds) of a 2-rank ddprun + ddptrain run to its end."""
        t0 = time.monotonic()
        proc = self.start(self.ddprun(0) + ["--", DDPTRAIN, *TRAIN, "--max-steps", str(steps),
                                            "--log-every", "500"], tmp / f"{name}.log", env)
        proc.wait(timeout=120)
        return proc.returncode, (tmp / f"{name}.log").read_text(), time.monotonic() - t0

    def test_trainjob_progress_reaches_the_trainer_server(self):
        tmp = self.workdir()
        url, requests, _ = self.status_server(tmp)
        code, log, seconds = self.train(tmp, "train", self.trainer_env(url, tmp), 1500)
        self.assertEqual(code, 0, log)
        entries = [json.loads(line) for line in requests.read_text().splitlines()] if requests.exists() else []
        print(f"{len(entries)} requests in a {seconds:.1f} s run", flush=True)
        rejected = [e for e in entries if not e["accepted"]]
        self.assertEqual(rejected, [], "the path, token or a body was refused")
        self.assertGreaterEqual(len(entries), 2, log)
        bodies = [json.loads(e["raw"]) for e in entries]
        print("one accepted body:", entries[len(entries) // 2]["raw"], flush=True)
        print("progress:", [(e["received_at"][11:23], b["trainerStatus"].get("progressPercentage"))
                            for e, b in zip(entries, bodies)], flush=True)
        progress = []
        for e, body in zip(entries, bodies):
            self.assertEqual(e["headers"]["Content-Type"], "application/json")
            self.assertEqual(list(body), ["trainerStatus"], body)
            status = body["trainerStatus"]
            self.assertLessEqual(set(status), {"progressPercentage", "estimatedRemainingSeconds", "metrics",
                                               "lastUpdatedTime"}, body)
            self.assertIs(type(status["progressPercentage"]), int, body)
            self.assertTrue(0 <= status["progressPercentage"] <= 100, body)
            progress.append(status["progressPercentage"])
            if "estimatedRemainingSeconds" in status:
                self.assertIs(type(status["estimatedRemainingSeconds"]), int, body)
                self.assertGreaterEqual(status["estimatedRemainingSeconds"], 0, body)
            for metric in status.get("metrics", []):
                self.assertEqual(set(metric), {"name", "value"}, body)
                self.assertIsInstance(metric["value"], str, body)
                self.assertTrue(1 <= len(metric["name"]) <= 64 and 1 <= len(metric["value"]) <= 64, body)
            self.assertRegex(status["lastUpdatedTime"], RFC3339)
            self.assertIn("loss", {m["name"] for m in status.get("metrics", [])}, body)
        self.assertEqual(progress, sorted(progress), "progressPercentage went down")
        received = [dt_seconds(e["received_at"]) for e in entries]
        gaps = [b - a for a, b in zip(received, received[1:])]
        print("seconds between posts:", [round(g, 2) for g in gaps], flush=True)
        for gap in gaps[:-1]:  # the final post comes when the run ends
            self.assertGreaterEqual(gap, 4.5, gaps)
        final_step = [m["value"] for m in bodies[-1]["trainerStatus"].get("metrics", []) if m["name"] == "step"]
        self.assertEqual(progress[-1], 100,
                         f"the final post (after the run's last step, 1500 of 1500) should say 100 %; it "
                         f"says {progress[-1]} % with step {final_step}: NodeMonitor's final post reuses "
                         f"the rank 0 snapshot of the last periodic post (lastRankZero), taken up to 5 s "
                         f"before the end, since the workers are gone when it is made")

    def test_a_down_or_slow_trainer_server_never_stops_training(self):
        tmp = self.workdir()
        steps = 400
        code, log, baseline = self.train(tmp, "baseline", self.env(), steps)
        self.assertEqual(code, 0, log)

        (tmp / "certs").mkdir()
        (tmp / "certs/token").write_text(TOKEN)
        subprocess.run([PYTHON, str(STATUS_SERVER), "gen-certs", str(tmp / "certs")], check=True,
                       capture_output=True, timeout=60)
        down = f"https://127.0.0.1:{free_port()}{STATUS_PATH}"
        code, log, seconds = self.train(tmp, "down", self.trainer_env(down, tmp), steps)
        print(f"server down: exit {code} in {seconds:.1f} s (without the variables: {baseline:.1f} s)", flush=True)
        self.assertEqual(code, 0, log)
        self.assertRegex(log, r"\[warn(ing)?\].*event=trainjob_progress_failed url=" + re.escape(down))
        self.assertLess(seconds, baseline + 5, log)

        slow_tmp = tmp / "slow"
        slow_tmp.mkdir()
        url, requests, _ = self.status_server(slow_tmp, "--delay", "20")
        code, log, seconds = self.train(slow_tmp, "slow", self.trainer_env(url, slow_tmp), steps)
        print(f"server answering after 20 s: exit {code} in {seconds:.1f} s (without the variables: "
              f"{baseline:.1f} s)", flush=True)
        self.assertEqual(code, 0, log)
        self.assertRegex(log, r"event=trainjob_progress_failed .*cause=")
        # At exit the reporter waits for a post in flight (5 s timeout) and, after a failed
        # one, makes no final post (Note [TrainJob progress]): 5 s at most, plus slack for a
        # loaded machine.
        self.assertLess(seconds, baseline + 8, log)

    # --- a Python script under ddprun -----------------------------------------------------
    def test_python_script_reports_through_the_metrics_file(self):
        tmp = self.workdir()
        port = free_port()
        proc = self.start(self.ddprun(port, "--python", PYTHON) + ["--", str(METRICS_WORKER), "80", "0.1"],
                          tmp / "run.log", self.env())
        url = f"http://127.0.0.1:{port}/metrics"

        def page_with_both_ranks():
            code, page = http_get(url)
            return page if code == 200 and ranks_of(page, "ddprun_step") == {"0", "1"} else None
        page = wait_for("ddprun_step of both Python ranks", page_with_both_ranks, 60)
        print("/metrics of the Python script:\n  " + "\n  ".join(
            line for line in page.splitlines() if re.match(r"(ddprun_(step|total_steps|loss)|process_resident_memory_bytes)\b",
                                                          line)), flush=True)
        self.assertEqual(ranks_of(page, "ddprun_loss"), {"0", "1"})
        self.assertEqual(ranks_of(page, "process_resident_memory_bytes", role="worker"), {"0", "1"})
        proc.wait(timeout=60)
        log = (tmp / "run.log").read_text()
        self.assertEqual(proc.returncode, 0, log)
        self.assertIn("metrics_file=True", log)

    # --- mpirun, no ddprun ----------------------------------------------------------------
    @unittest.skipUnless(MPIEXEC, "no MPIEXEC given (ddprun built without MPI)")
    def test_mpirun_without_ddprun_serves_from_local_rank_zero(self):
        tmp = self.workdir()
        port = free_port()
        env = self.env(HOME=str(tmp))
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        proc = self.start([MPIEXEC, "--oversubscribe", "-np", "2", "--bind-to", "none",
                           "-x", f"DDPRUN_METRICS_PORT={port}", "-x", "DDPRUN_METRICS_HOST=127.0.0.1",
                           DDPTRAIN, *TRAIN, "--max-steps", "1500", "--log-every", "500"], tmp / "run.log", env)
        url = f"http://127.0.0.1:{port}/metrics"

        def page_with_both_ranks():
            code, page = http_get(url)
            stepped = {l.get("rank") for name, l, v in parse_page(page) if name == "ddprun_step" and float(v) > 0}
            return page if code == 200 and stepped == {"0", "1"} else None
        try:
            page = wait_for("ddprun_step of both MPI ranks", page_with_both_ranks, 60)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{(tmp / 'run.log').read_text()[-3000:]}\nlast page:\n{http_get(url)}")
        print("/metrics under mpirun:\n  " + "\n  ".join(
            line for line in page.splitlines() if re.match(r"(ddprun_step|process_resident_memory_bytes)\b", line)),
            flush=True)
        self.assertEqual(ranks_of(page, "ddprun_step_duration_seconds_count"), {"0", "1"})
        proc.wait(timeout=120)
        self.assertEqual(proc.returncode, 0, (tmp / "run.log").read_text())

    # --- the progress bar in a terminal -----------------------------------------------------
    def tmux_run(self, name: str, argv: list[str], tmp: pathlib.Path) -> list[str]:
        """Every distinct capture of a 160x20 tmux pane running `argv` to its end."""
        socket_name = f"ddprun-metrics-{os.getpid()}-{name}"
        tmux = ["tmux", "-L", socket_name, "-f", "/dev/null"]
        self.addCleanup(subprocess.run, tmux + ["kill-server"], capture_output=True)
        script = tmp / f"{name}.sh"
        env = " ".join(f"-u {k}" for k in os.environ if k.startswith(("PET_", "MASTER_", "DDPRUN_", "KUBEFLOW_")))
        script.write_text("#!/bin/sh\n" + f"env {env} " + " ".join(f"'{a}'" for a in argv)
                          + f"\necho EXIT=$? > {tmp / (name + '.rc')}\nsleep 600\n")
        script.chmod(0o755)
        subprocess.run(tmux + ["new-session", "-d", "-x", "160", "-y", "20", "-s", name, str(script)],
                       check=True, timeout=10)
        rc = tmp / f"{name}.rc"
        captures: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = rc.exists()
            pane = subprocess.run(tmux + ["capture-pane", "-p", "-t", name], capture_output=True, text=True,
                                  timeout=10).stdout
            if not captures or pane != captures[-1]:
                captures.append(pane)
            if done:
                break
            time.sleep(0.1)
        self.assertTrue(rc.exists(), f"{name} did not end in 90 s:\n{captures[-1] if captures else ''}")
        self.assertEqual(rc.read_text().strip(), "EXIT=0", captures[-1])
        return captures

    def assert_bar_drawn(self, captures: list[str], prefix: str) -> str:
        """The last capture showing the bar as the last non-empty line, below a training
        log line (one that scrolled up while the bar was drawn)."""
        for pane in reversed(captures):
            lines = [line for line in pane.splitlines() if line.strip()]
            if lines and BAR.search(lines[-1]) and lines[-1].startswith(prefix) and \
                    any("[train] epoch=" in line for line in lines[:-1]):
                return pane
        self.fail("no capture had the bar as its last line below log lines:\n" + "\n----\n".join(captures[-3:]))

    def test_progress_bar_in_tmux(self):
        if shutil.which("tmux") is None:
            self.skipTest("no tmux")
        tmp = self.workdir()
        alone = self.tmux_run("alone", [DDPTRAIN, *TRAIN, "--max-steps", "1500", "--log-every", "300"], tmp)
        pane = self.assert_bar_drawn(alone, "epoch ")
        print("tmux, ddptrain alone:\n" + pane.rstrip(), flush=True)

        launched = self.tmux_run("ddprun", self.ddprun(0) + ["--", DDPTRAIN, *TRAIN, "--max-steps", "800",
                                                             "--log-every", "200"], tmp)
        pane = self.assert_bar_drawn(launched, "[rank0]: epoch ")
        print("tmux, ddprun --nproc-per-node 2:\n" + pane.rstrip(), flush=True)

        quiet = self.tmux_run("quiet", self.ddprun(0, "--no-progress") + ["--", DDPTRAIN, *TRAIN, "--max-steps",
                                                                          "400", "--log-every", "200"], tmp)
        self.assertTrue(any("step=400/400" in pane for pane in quiet), quiet[-1])
        self.assertEqual([pane for pane in quiet if BAR.search(pane)], [], "--no-progress drew a bar")


def dt_seconds(iso: str) -> float:
    import datetime
    return datetime.datetime.fromisoformat(iso).timestamp()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, 30 s, then SIGKILL to the process group it leads (started by this test)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its group left behind
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


if __name__ == "__main__":
    unittest.main(verbosity=2)
