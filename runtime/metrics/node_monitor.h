// One pod's window onto its training: the HTTP endpoint (GET /metrics, /healthz, /readyz)
// and the TrainJob progress, over what the node's workers write (Note [Metrics page] in
// exposition.h). ddprun holds one; under mpirun without ddprun, the node's local rank 0
// does (ddp::init).
//
// Note [Metrics endpoint]
// ~~~~~~~~~~~~~~~~~~~~~~~
// cpp-httplib serves on its own threads (a pool), with 5 s read and write timeouts, and
// each request reads the workers' files at that moment: a scraper that is slow, floods, or
// never reads its reply holds one of those threads for at most the timeouts, and no
// training thread ever waits for it. A port that cannot be bound (taken, no permission) is
// a warning, not an error: the training matters more than its metrics.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "runtime/metrics/exposition.h"

namespace ddp::metrics {

// The default --metrics-port / DDPRUN_METRICS_PORT; k8s/ names it `metrics`.
constexpr int kDefaultMetricsPort = 9410;

struct NodeMonitorOptions {
  int port = kDefaultMetricsPort;  // 0: no HTTP endpoint
  std::string host = "0.0.0.0";    // every interface: Prometheus scrapes the pod's IP
  bool servedByLauncher = true;
  bool trainJobProgress = true;  // post it when the Trainer's variables are set
};

class NodeMonitor {
 public:
  explicit NodeMonitor(NodeMonitorOptions options);
  ~NodeMonitor();
  NodeMonitor(const NodeMonitor&) = delete;
  NodeMonitor& operator=(const NodeMonitor&) = delete;

  // Changes what the node knows (workers started or gone, restarts, the rendezvous).
  void update(const std::function<void(NodeView&)>& change);
  NodeView view() const;
  // Reads the workers' files once more (the last state, for the final TrainJob post): when
  // the workers have exited, before their files go.
  void workersExited();
  // The port it listens on; 0 when it serves nothing.
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ddp::metrics
