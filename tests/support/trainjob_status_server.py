"""A stand-in for Kubeflow Trainer's TrainJob status server (v2.3.0), stdlib only.

Emulates pkg/statusserver/{server,auth,middleware,utils}.go at tag v2.3.0 (commit 658725bd)
plus the CRD validation the API server applies to the status subresource
(manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml:5987-6046), in the real server's
order (Note [TrainJob progress] in runtime/metrics/trainjob_progress.h has the wire format):
  413  Content-Length > 65536 (checked before routing)
  404  not "POST /apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs/{name}/status"
  403  Authorization not exactly "Bearer <token>", a wrong token or a wrong audience
  422  "Invalid payload": Go's json.Decode fails (wrong JSON types, bad time, not an object)
  200  an echo of {} when trainerStatus is absent or null (nothing applied)
  422  CRD validation (ranges, lengths, lastUpdatedTime required)
  200  an echo of the parsed request (Content-Type: application/json)
Errors are metav1.Status JSON: {"metadata":{},"status":"Failure","message":..,"reason":..,"code":..}

    trainjob_status_server.py gen-certs DIR      # openssl: ca.crt, tls.crt, tls.key in DIR
    trainjob_status_server.py serve --certdir DIR [--host 127.0.0.1] [--port 0]
        [--namespace default] [--name my-job] [--token T | --token-file F]
        [--out requests.jsonl] [--log-rejected] [--strict] [--delay SECONDS]

The first line on stdout is "listening on https://HOST:PORT/<status path>" (--port 0 picks a
free port). Tokens: with --token or --token-file the bearer must equal it (file content,
stripped); without, a JWT whose claims (not verified) have aud
"trainer.kubeflow.org/v1alpha1/namespaces/<ns>/trainjobs/<name>/status", exp in the future
and kubernetes.io.namespace == <ns>. --strict also rejects unknown or mis-cased keys (the
real server ignores them: a typo would go unnoticed). --delay holds every reply that long,
a slow server. Each accepted request (and with --log-rejected each rejected one) is one JSON
line in --out: the raw body, the parsed echo, the Content-Type, received_at and
since_prev_accepted_s.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1 << 16  # middleware.go:64-79
INT32_MAX = 2**31 - 1
STATUS_PATH = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs/([^/]+)/status$")
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DEFAULT_DNS = "kubeflow-trainer-controller-manager.kubeflow-system.svc"


class InvalidPayload(Exception):
    """What Go's json.Decode rejects: 422 "Invalid payload"."""


class Invalid(Exception):
    """What the CRD validation rejects: 422 with the API server's message."""


def status_path(namespace: str, name: str) -> str:
    return f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{namespace}/trainjobs/{name}/status"


def audience(namespace: str, name: str) -> str:
    return status_path(namespace, name).removeprefix("/apis/")


def status_body(message: str, reason: str, code: int) -> dict:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def go_lookup(obj: dict, field: str, strict: bool, known: set[str]):
    """encoding/json matches keys case-insensitively, and the last match wins."""
    value = None
    for key, v in obj.items():
        if strict and key not in known:
            raise InvalidPayload(f"unknown field {key!r} (the real server would ignore it)")
        if key.lower() == field.lower():
            value = v
    return value


def as_int32(value, what: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -2**31 <= value <= INT32_MAX:
        raise InvalidPayload(f"{what}: cannot unmarshal {value!r} into int32")
    return value


def parse_time(value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPayload("lastUpdatedTime must be an RFC 3339 string")
    m = RFC3339.match(value)
    if not m:
        raise InvalidPayload(f"lastUpdatedTime {value!r} is not RFC 3339")
    zone = m.group(8)
    try:
        t = dt.datetime(*[int(m.group(i)) for i in range(1, 7)])
        offset = dt.timedelta(0) if zone == "Z" else (1 if zone[0] == "+" else -1) * dt.timedelta(
            hours=int(zone[1:3]), minutes=int(zone[4:6]))
    except ValueError as e:
        raise InvalidPayload(f"lastUpdatedTime {value!r}: {e}")
    return (t - offset).replace(tzinfo=dt.timezone.utc)


def decode(raw: bytes, strict: bool):
    """json.NewDecoder(r.Body).Decode(&UpdateTrainJobStatusRequest): the trainerStatus, or
    None when there is none."""
    try:
        doc, _ = json.JSONDecoder().raw_decode(raw.decode("utf-8").lstrip())  # the first value
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidPayload(str(e))
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise InvalidPayload("the top-level JSON must be an object")
    status = go_lookup(doc, "trainerStatus", strict, {"trainerStatus"})
    if status is None:
        return None
    if not isinstance(status, dict):
        raise InvalidPayload("trainerStatus must be an object")
    known = {"progressPercentage", "estimatedRemainingSeconds", "metrics", "lastUpdatedTime"}
    metrics = go_lookup(status, "metrics", strict, known)
    if metrics is not None and not isinstance(metrics, list):
        raise InvalidPayload("metrics must be an array")
    parsed = {
        "progressPercentage": as_int32(go_lookup(status, "progressPercentage", strict, known),
                                       "progressPercentage"),
        "estimatedRemainingSeconds": as_int32(
            go_lookup(status, "estimatedRemainingSeconds", strict, known), "estimatedRemainingSeconds"),
        "metrics": [],
        "lastUpdatedTime": parse_time(go_lookup(status, "lastUpdatedTime", strict, known)),
    }
    for metric in metrics or []:
        metric = {} if metric is None else metric
        if not isinstance(metric, dict):
            raise InvalidPayload("a metric must be an object")
        name = go_lookup(metric, "name", strict, {"name", "value"})
        value = go_lookup(metric, "value", strict, {"name", "value"})
        for x, what in ((name, "name"), (value, "value")):
            if x is not None and not isinstance(x, str):
                raise InvalidPayload(f"metric {what} must be a JSON string, got {x!r}")
        parsed["metrics"].append({"name": name or "", "value": value or ""})
    return parsed


def validate(status: dict) -> None:
    """The CRD's OpenAPI and CEL rules, as the API server applies them."""
    errors = []
    p = "status.trainerStatus"
    if status["progressPercentage"] is not None and not 0 <= status["progressPercentage"] <= 100:
        errors.append(f"{p}.progressPercentage: Invalid value: {status['progressPercentage']}: "
                      "must be between 0 and 100")
    if status["estimatedRemainingSeconds"] is not None and status["estimatedRemainingSeconds"] < 0:
        errors.append(f"{p}.estimatedRemainingSeconds: Invalid value: "
                      f"{status['estimatedRemainingSeconds']}: should be >= 0")
    if len(status["metrics"]) > 256:
        errors.append(f"{p}.metrics: Too many: {len(status['metrics'])}: must have at most 256 items")
    for i, metric in enumerate(status["metrics"]):
        for key in ("name", "value"):
            if not 1 <= len(metric[key]) <= 64:
                errors.append(f"{p}.metrics[{i}].{key}: length must be 1..64, got {len(metric[key])}")
    if status["lastUpdatedTime"] is None:
        errors.append(f'{p}: Invalid value: "object": lastUpdatedTime is required when '
                      "trainerStatus is present")
    if errors:
        raise Invalid("TrainJob.trainer.kubeflow.org is invalid: " + "; ".join(errors))


def go_encode(status) -> dict:
    """The reply: the parsed request as Go re-encodes it (omitempty, time in seconds)."""
    if status is None:
        return {}
    out = {k: status[k] for k in ("progressPercentage", "estimatedRemainingSeconds")
           if status[k] is not None}
    if status["metrics"]:
        out["metrics"] = [{k: v for k, v in m.items() if v} for m in status["metrics"]]
    t = status["lastUpdatedTime"]
    out["lastUpdatedTime"] = t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else None
    return {"trainerStatus": out}


def jwt_claims(token: str) -> dict:
    _header, claims, _signature = token.split(".")
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-trainjob-status/2.3.0"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        sys.stderr.write(f"[status-server] {self.address_string()} {format % args}\n")

    def send_json(self, code: int, obj: dict) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        if self.server.options.delay > 0:
            time.sleep(self.server.options.delay)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, code: int, reason: str, message: str) -> None:
        self.server.record({"accepted": False, "code": code, "message": message, "path": self.path,
                            "method": self.command})
        self.send_json(code, status_body(message, reason, code))

    def read_body(self):
        """The body, or None when a chunked one passes the limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > MAX_BODY_BYTES:
                    return None
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def authorized(self, namespace: str, name: str) -> bool:
        parts = self.headers.get("Authorization", "").split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return False
        token, options = parts[1], self.server.options
        if options.expected_token is not None:
            return token == options.expected_token and (namespace, name) == (options.namespace,
                                                                              options.name)
        try:
            claims = jwt_claims(token)
        except Exception:
            return False
        aud = claims.get("aud")
        aud = [aud] if isinstance(aud, str) else (aud or [])
        return (audience(namespace, name) in aud and claims.get("exp", 0) > time.time()
                and (claims.get("kubernetes.io") or {}).get("namespace") == namespace)

    def handle_any(self) -> None:
        length = self.headers.get("Content-Length")
        if length is not None and int(length) > MAX_BODY_BYTES:  # before routing
            self.close_connection = True
            return self.fail(413, "RequestEntityTooLarge", "Payload too large")
        body = self.read_body()
        m = STATUS_PATH.match(self.path.split("?", 1)[0])
        if self.command != "POST" or not m:
            return self.fail(404, "NotFound", "Not found")
        namespace, name = m.group(1), m.group(2)
        if not self.authorized(namespace, name):
            return self.fail(403, "Forbidden", "Forbidden")
        if body is None or len(body) > MAX_BODY_BYTES:
            return self.fail(422, "Invalid", "Invalid payload")
        try:
            status = decode(body, self.server.options.strict)
        except InvalidPayload as e:
            self.log_message("invalid payload: %s", e)
            return self.fail(422, "Invalid", "Invalid payload")
        if status is not None:
            try:
                validate(status)
            except Invalid as e:
                return self.fail(422, "Invalid", str(e))
        echo = go_encode(status)
        self.server.record({"accepted": True, "code": 200, "namespace": namespace, "name": name,
                            "headers": {"Content-Type": self.headers.get("Content-Type")},
                            "raw": body.decode("utf-8", "replace"), "parsed": echo})
        self.send_json(200, echo)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], options: argparse.Namespace):
        super().__init__(address, Handler)
        self.options = options
        self.lock = threading.Lock()
        self.last_accepted = None

    def record(self, entry: dict) -> None:
        now = time.time()
        entry["received_at"] = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat()
        with self.lock:
            if entry["accepted"]:
                entry["since_prev_accepted_s"] = (None if self.last_accepted is None
                                                  else round(now - self.last_accepted, 3))
                self.last_accepted = now
            if self.options.out and (entry["accepted"] or self.options.log_rejected):
                with open(self.options.out, "a") as f:
                    f.write(json.dumps(entry) + "\n")


def gen_certs(directory: str, dns: str) -> None:
    """A CA and a server certificate it signed, for DNS:<dns>, localhost and 127.0.0.1."""
    os.makedirs(directory, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(("openssl",) + args, check=True, cwd=directory, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/O=kubeflow-trainer/CN=kubeflow-trainer-ca")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{dns},DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=" + dns)
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "tls.crt", "-days", "2", "-extfile", "san.ext")
    print(f"wrote {directory}/{{ca.crt,tls.crt,tls.key}} (SANs: {dns}, localhost, 127.0.0.1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    certs = commands.add_parser("gen-certs")
    certs.add_argument("dir")
    certs.add_argument("--dns", default=DEFAULT_DNS)
    serve = commands.add_parser("serve")
    serve.add_argument("--certdir", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=10443, help="0: a free one")
    serve.add_argument("--namespace", default="default")
    serve.add_argument("--name", default="my-job")
    serve.add_argument("--token")
    serve.add_argument("--token-file")
    serve.add_argument("--out", help="JSON lines file of the accepted requests")
    serve.add_argument("--log-rejected", action="store_true", help="also write rejected ones to --out")
    serve.add_argument("--strict", action="store_true", help="reject unknown or mis-cased keys")
    serve.add_argument("--delay", type=float, default=0, help="seconds to hold every reply")
    options = parser.parse_args()
    if options.command == "gen-certs":
        return gen_certs(options.dir, options.dns)
    options.expected_token = options.token
    if options.token_file:
        with open(options.token_file) as f:
            options.expected_token = f.read().strip()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.path.join(options.certdir, "tls.crt"),
                            os.path.join(options.certdir, "tls.key"))
    server = Server((options.host, options.port), options)
    # The handshake happens in the handler's thread (on first read), not in accept(): a
    # client that connects and says nothing holds one thread, not the server.
    server.socket = context.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    print(f"listening on https://{options.host}:{server.server_address[1]}"
          f"{status_path(options.namespace, options.name)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
