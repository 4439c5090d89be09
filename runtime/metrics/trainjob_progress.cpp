#include "runtime/metrics/trainjob_progress.h"

#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "runtime/log/logging.h"

namespace ddp::metrics {
namespace {

using nlohmann::json;

std::string rfc3339(double unixSeconds) {
  const auto t = static_cast<std::time_t>(unixSeconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string readTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// "https://host:port/path" -> ("https://host:port", "/path").
std::pair<std::string, std::string> splitUrl(const std::string& url) {
  const auto scheme = url.find("://");
  const auto path = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (path == std::string::npos) return {url, "/"};
  return {url.substr(0, path), url.substr(path)};
}

}  // namespace

std::optional<TrainJobProgressOptions> TrainJobProgressOptions::fromEnvironment() {
  const char* url = std::getenv("KUBEFLOW_TRAINER_SERVER_URL");
  const char* ca = std::getenv("KUBEFLOW_TRAINER_SERVER_CA_CERT");
  const char* token = std::getenv("KUBEFLOW_TRAINER_SERVER_TOKEN");
  if (!url || !*url || !ca || !*ca || !token || !*token) return std::nullopt;
  TrainJobProgressOptions o;
  o.url = url;
  o.caCertFile = ca;
  o.tokenFile = token;
  return o;
}

json trainJobStatusRequest(const json& snapshot, double stepsPerSecond, double nowUnix) {
  json status;
  const auto step = snapshot.value("step", std::int64_t{0});
  const auto total = snapshot.value("total_steps", std::int64_t{0});
  if (total > 0) {
    const auto done = std::clamp<std::int64_t>(step, 0, total);
    status["progressPercentage"] = static_cast<int>(100 * done / total);
    if (done == total) {
      status["estimatedRemainingSeconds"] = 0;
    } else if (stepsPerSecond > 0) {
      const double remaining = static_cast<double>(total - done) / stepsPerSecond;
      status["estimatedRemainingSeconds"] =
          static_cast<std::int64_t>(std::min(std::ceil(remaining), 2147483647.0));
    }
  }
  // Values are strings of at most 64 characters (the CRD's rule); names the Prometheus
  // metrics' without the prefix.
  json metrics = json::array();
  const auto add = [&](const char* name, const json::json_pointer& at) {
    if (!snapshot.contains(at) || !snapshot.at(at).is_number()) return;
    const auto& v = snapshot.at(at);
    metrics.push_back({{"name", name},
                       {"value", v.is_number_integer() ? std::to_string(v.get<std::int64_t>())
                                                       : fmt::format("{:.6g}", v.get<double>())}});
  };
  add("step", json::json_pointer("/step"));
  add("epoch", json::json_pointer("/epoch"));
  add("loss", json::json_pointer("/loss"));
  add("learning_rate", json::json_pointer("/learning_rate"));
  add("samples_per_second", json::json_pointer("/samples_per_second"));
  add("eval_loss", json::json_pointer("/eval/loss"));
  add("eval_accuracy", json::json_pointer("/eval/accuracy"));
  status["metrics"] = metrics;
  status["lastUpdatedTime"] = rfc3339(nowUnix);
  return {{"trainerStatus", status}};
}

struct TrainJobProgressReporter::Impl {
  TrainJobProgressOptions options;
  std::function<std::optional<json>()> rankZero;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::thread thread;
  // The steps per second: from the first state seen with a step to the newest.
  std::optional<std::pair<double, std::int64_t>> firstSeen;
  int failures = 0;
  bool announced = false;

  void post() {
    const auto snapshot = rankZero();
    if (!snapshot) return;
    const double now = unixNow();
    const auto step = snapshot->value("step", std::int64_t{0});
    if (!firstSeen && step > 0) firstSeen = {now, step};
    double stepsPerSecond = 0;
    if (firstSeen && step > firstSeen->second && now > firstSeen->first) {
      stepsPerSecond = static_cast<double>(step - firstSeen->second) / (now - firstSeen->first);
    }
    const auto body = trainJobStatusRequest(*snapshot, stepsPerSecond, now).dump();
    const auto [origin, path] = splitUrl(options.url);
    std::string error;
    try {
      httplib::Client client(origin);
      client.set_ca_cert_path(options.caCertFile.c_str());
      client.enable_server_certificate_verification(true);
      const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(options.timeout);
      client.set_connection_timeout(seconds);
      client.set_read_timeout(seconds);
      client.set_write_timeout(seconds);
      const httplib::Headers headers{{"Authorization", "Bearer " + readTrimmed(options.tokenFile)}};
      const auto reply = client.Post(path, headers, body, "application/json");
      if (!reply) {
        error = httplib::to_string(reply.error());
      } else if (reply->status != 200) {
        error = fmt::format("HTTP {}: {}", reply->status, reply->body.substr(0, 300));
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (error.empty()) {
      if (!announced || failures > 0) {
        log::info("metrics", "event=trainjob_progress url={} (posting every {} s)", options.url,
                  options.interval.count() / 1000.0);
      }
      announced = true;
      failures = 0;
      return;
    }
    // The first failure and then every 12th (a minute at 5 s): a down server is not a flood.
    if (failures++ % 12 == 0) {
      log::warn("metrics",
                "event=trainjob_progress_failed url={} failures={} cause=\"{}\" (training goes "
                "on; check that the Trainer's status server runs and that {} and {} are the "
                "files it mounted)",
                options.url, failures, error, options.caCertFile, options.tokenFile);
    }
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!wake.wait_for(lock, options.interval, [&] { return stopping; })) {
      lock.unlock();
      post();
      lock.lock();
    }
  }
};

TrainJobProgressReporter::TrainJobProgressReporter(TrainJobProgressOptions options,
                                                   std::function<std::optional<json>()> rankZero)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->rankZero = std::move(rankZero);
  impl_->thread = std::thread([impl = impl_.get()] {
    impl->post();  // 0 % (or the resumed percentage) at the start
    impl->loop();
  });
}

TrainJobProgressReporter::~TrainJobProgressReporter() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->thread.join();
  // The final state; not after a failed post, so that a server that is down or slow costs
  // the exit one timeout at most (the post in flight), not two.
  if (impl_->failures == 0) impl_->post();
}

}  // namespace ddp::metrics
