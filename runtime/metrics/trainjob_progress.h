// TrainJob progress for Kubeflow Trainer (v2.2+, feature gate TrainJobStatus): rank 0's
// progress, remaining time and metrics, posted to the Trainer's status server.
//
// Note [TrainJob progress]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// Trainer's trainjobstatus plugin (kubeflow/trainer v2.3.0,
// pkg/runtime/framework/plugins/trainjobstatus/trainjobstatus.go:44-50, 88-96) gives every
// trainer container three variables:
//   KUBEFLOW_TRAINER_SERVER_URL      the full URL, .../namespaces/<ns>/trainjobs/<name>/status
//   KUBEFLOW_TRAINER_SERVER_CA_CERT  a file: the PEM CA that signed the server's certificate
//   KUBEFLOW_TRAINER_SERVER_TOKEN    a file: a projected service-account JWT (1 h, rotated by
//                                    the kubelet, so it is read again for every post)
// The server (pkg/statusserver/server.go:87, 148-215) takes
//   POST <URL>  Authorization: Bearer <token>  Content-Type: application/json
//   {"trainerStatus": {"progressPercentage": <int 0..100>, "estimatedRemainingSeconds":
//     <int >= 0>, "metrics": [{"name": "loss", "value": "0.15"}, ...],  (values are strings)
//     "lastUpdatedTime": "<RFC 3339>"}}                                  (required)
// and replaces the whole status with each post, so every post carries every field. Its
// Kubernetes client is shared by all TrainJobs (5 QPS), and the SDK posts at most every 5 s
// (docs/user-guides/trainjob-progress.md:137, 187): so do we, plus one final post when the
// run ends (none after a failed post: a down server costs the exit one timeout at most).
// Whoever serves the node's /metrics and sees global rank 0's metrics file posts (ddprun on
// rank 0's node; under mpirun the local rank 0 there), from a thread of its own with 5 s
// timeouts: a server that is down or slow costs a log line, never a step.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace ddp::metrics {

struct TrainJobProgressOptions {
  std::string url;                           // KUBEFLOW_TRAINER_SERVER_URL
  std::string caCertFile;                    // KUBEFLOW_TRAINER_SERVER_CA_CERT
  std::string tokenFile;                     // KUBEFLOW_TRAINER_SERVER_TOKEN
  std::chrono::milliseconds interval{5000};  // the SDK's minimum
  std::chrono::milliseconds timeout{5000};

  // From the three variables; std::nullopt unless all are set.
  static std::optional<TrainJobProgressOptions> fromEnvironment();
};

// The request body for rank 0's metrics file `snapshot` (Note [Training metrics]) at
// `nowUnix`, with the steps per second measured by the caller (0: unknown).
nlohmann::json trainJobStatusRequest(const nlohmann::json& snapshot, double stepsPerSecond,
                                     double nowUnix);

// Posts every interval what `rankZero` returns (std::nullopt: nothing to post yet), and
// once more when destroyed (the final state).
class TrainJobProgressReporter {
 public:
  TrainJobProgressReporter(TrainJobProgressOptions options,
                           std::function<std::optional<nlohmann::json>()> rankZero);
  ~TrainJobProgressReporter();
  TrainJobProgressReporter(const TrainJobProgressReporter&) = delete;
  TrainJobProgressReporter& operator=(const TrainJobProgressReporter&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ddp::metrics
