#include "runtime/metrics/node_monitor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <thread>

#include "runtime/log/logging.h"
#include "runtime/metrics/trainjob_progress.h"

namespace ddp::metrics {
namespace {

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void reply(httplib::Response& response, const Probe& probe) {
  response.status = probe.ok ? 200 : 503;
  response.set_content(probe.reason + "\n", "text/plain; charset=utf-8");
}

}  // namespace

struct NodeMonitor::Impl {
  NodeMonitorOptions options;
  mutable std::mutex mutex;
  NodeView node;
  httplib::Server server;
  std::thread serving;
  int port = 0;
  std::unique_ptr<TrainJobProgressReporter> progress;
  std::optional<nlohmann::json> lastRankZero;

  NodeView snapshotView() const {
    std::lock_guard<std::mutex> lock(mutex);
    return node;
  }

  void routes() {
    // Note [Metrics endpoint]: a reader that stalls holds one pool thread this long.
    server.set_read_timeout(5, 0);
    server.set_write_timeout(5, 0);
    server.set_keep_alive_timeout(5);
    // httplib's default adds SO_REUSEPORT, with which a second ddprun on the node would
    // share the port and answer every other scrape; SO_REUSEADDR alone rebinds after a
    // restart and refuses a port in use.
    server.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      const auto view = snapshotView();
      response.set_content(renderMetrics(view, readWorkers(view), readProcessStats(getpid())),
                           "text/plain; version=0.0.4; charset=utf-8");
    });
    server.Get("/healthz", [this](const httplib::Request&, httplib::Response& response) {
      const auto view = snapshotView();
      reply(response, judgeLiveness(view, readWorkers(view), unixNow()));
    });
    server.Get("/readyz", [this](const httplib::Request&, httplib::Response& response) {
      const auto view = snapshotView();
      reply(response, judgeReadiness(view, readWorkers(view), unixNow()));
    });
  }

  void listen() {
    if (options.port == 0) return;
    routes();
    if (!server.bind_to_port(options.host, options.port)) {
      log::warn("metrics",
                "event=metrics_not_served port={} host={} cause=\"{}\" (training goes on "
                "without /metrics, /healthz and /readyz; free the port or choose another with "
                "--metrics-port, 0 to turn the endpoint off)",
                options.port, options.host, std::strerror(errno));
      return;
    }
    port = options.port;
    serving = std::thread([this] { server.listen_after_bind(); });
    // stop() is a no-op until the loop runs: a monitor destroyed at once would join forever.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!server.is_running() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    log::debug("metrics", "event=metrics_served port={} paths=/metrics,/healthz,/readyz", port);
  }

  // Global rank 0's file when this node runs it, else the last one read: the final post
  // comes after the attempt, whose files may be gone.
  std::optional<nlohmann::json> rankZero() {
    for (const auto& reading : readWorkers(snapshotView())) {
      if (reading.worker.rank == 0 && reading.snapshot) {
        std::lock_guard<std::mutex> lock(mutex);
        lastRankZero = reading.snapshot;
      }
    }
    std::lock_guard<std::mutex> lock(mutex);
    return lastRankZero;
  }
};

NodeMonitor::NodeMonitor(NodeMonitorOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->node.servedByLauncher = impl_->options.servedByLauncher;
  impl_->listen();
  if (impl_->options.trainJobProgress) {
    if (auto progress = TrainJobProgressOptions::fromEnvironment()) {
      impl_->progress = std::make_unique<TrainJobProgressReporter>(
          std::move(*progress), [impl = impl_.get()] { return impl->rankZero(); });
    }
  }
}

NodeMonitor::~NodeMonitor() {
  impl_->progress.reset();  // its final post reads the workers' last files
  if (impl_->serving.joinable()) {
    impl_->server.stop();
    impl_->serving.join();
  }
}

void NodeMonitor::update(const std::function<void(NodeView&)>& change) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  change(impl_->node);
}

NodeView NodeMonitor::view() const { return impl_->snapshotView(); }

void NodeMonitor::workersExited() { impl_->rankZero(); }

int NodeMonitor::port() const { return impl_->port; }

}  // namespace ddp::metrics
