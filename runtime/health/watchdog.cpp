#include "runtime/health/watchdog.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/distributed/c10d/FlightRecorder.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/config.h"
// After config.h, which defines HAVE_NCCL (the precompiled header hid the order).
#if HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include "runtime/env/host_name.h"
#include "runtime/env/variables.h"
#include "runtime/exit_codes.h"
#include "runtime/health/background_saves.h"
#include "runtime/health/hang_bound.h"
#include "runtime/health/liveness.h"
#include "runtime/health/stacks.h"
#include "runtime/log/logging.h"

namespace ddp::health {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

const std::string kBeatKey = "ddprun/health/beat/";
const std::string kVerdictKey = "ddprun/health/verdict";
const std::string kRecordsKey = "ddprun/health/records/";

// How long rank 0 waits for the others' flight records, and for a checkpoint in progress.
constexpr auto kGatherRecords = std::chrono::seconds(3);
constexpr auto kFinishCheckpoint = std::chrono::seconds(60);
// How long rank 0's normal end waits for the others to finish (its store must outlive them).
constexpr auto kWaitForOthersToFinish = std::chrono::seconds(30);
// Note [Desync at a failure]: how long a failing rank waits for the others' heartbeats.
// One heartbeat interval and a half.
constexpr auto kDesyncLookAtFailure = std::chrono::milliseconds(1500);

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

json recordJson(const CollectiveRecord& r) {
  return {{"seq", r.seq}, {"op", r.op}, {"dtype", r.dtype}, {"numel", r.numel}};
}

CollectiveRecord recordFrom(const json& j) {
  CollectiveRecord r;
  r.seq = j.value("seq", std::uint64_t{0});
  r.op = j.value("op", std::string());
  r.dtype = j.value("dtype", std::string());
  r.numel = j.value("numel", std::int64_t{0});
  return r;
}

std::string rankList(const std::vector<int>& ranks) {
  std::string text;
  for (std::size_t i = 0; i < ranks.size(); ++i) text += (i ? "," : "") + std::to_string(ranks[i]);
  return text;
}

// What rank 0's judge keeps of one rank's heartbeats.
struct Seen {
  json beat;                  // the newest
  std::int64_t counter = -1;  // its "beat" field
  Clock::time_point beatChanged;
  std::pair<std::int64_t, std::uint64_t> progress{-1, 0};  // step, collectives
  Clock::time_point progressed;
};

}  // namespace

struct Watchdog::Impl {
  WatchdogOptions options;
  c10::intrusive_ptr<c10d::TCPStore> store;
  std::thread thread;
  std::mutex mutex;
  std::condition_variable wake;
  std::atomic<bool> stopping{false};
  std::thread guardThread;
  std::mutex guardMutex;
  std::condition_variable guardWake;
  std::atomic<std::int64_t> tickStartedNs{0};  // while a tick runs: when it began
  std::atomic<bool> failed{false};             // the program reports its own failure
  std::int64_t counter = 0;
  std::string state = "running";
  std::string error;
  bool peerLoss = false;
  std::atomic<bool> rankZeroBeats{false};  // rank 0 runs a watchdog too (a Python rank 0 does not)
  std::map<int, Seen> seen;                // the judge's (rank 0)

  explicit Impl(const WatchdogOptions& o) : options(o) {
    c10d::TCPStoreOptions storeOptions;
    storeOptions.port = options.storePort;
    storeOptions.isServer = false;
    storeOptions.waitWorkers = false;
    storeOptions.timeout = options.deadAfter;
    store = c10::make_intrusive<c10d::TCPStore>(options.storeHost, storeOptions);
  }

  json beat() {
    const Snapshot s = snapshot();
    json recent = json::array();
    for (const auto& r : s.recent) recent.push_back(recordJson(r));
    return {{"rank", options.rank},
            {"beat", ++counter},
            {"pid", getpid()},
            {"host", env::thisHostName()},
            {"state", state},
            {"error", error},
            {"peer_loss", peerLoss},
            {"step", s.step},
            {"stepping", s.stepping},
            {"phase", std::string(phaseName(s.phase))},
            {"in_phase_s", seconds(s.inPhase)},
            {"slowest_step_s", seconds(s.slowestStep)},
            {"slowest_checkpoint_s", seconds(s.slowestCheckpoint)},
            {"collectives", s.collectives},
            {"since_collective_s", seconds(s.sinceCollective)},
            {"recent", recent}};
  }

  void publish(const json& b) {
    const auto text = b.dump();
    store->set(kBeatKey + std::to_string(options.rank),
               std::vector<uint8_t>(text.begin(), text.end()));
    if (!options.heartbeatFile.empty()) {
      const auto tmp = options.heartbeatFile + ".tmp";
      {
        std::ofstream out(tmp, std::ios::trunc);
        out << text << "\n";
      }
      std::error_code ec;
      std::filesystem::rename(tmp, options.heartbeatFile, ec);
    }
  }

  std::optional<json> read(const std::string& key) {
    if (!store->check({key})) return std::nullopt;
    const auto bytes = store->get(key);
    auto parsed = json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (parsed.is_discarded()) return std::nullopt;
    return parsed;
  }

  // --- the judge (rank 0) ---------------------------------------------------------------

  void observe() {
    const auto now = Clock::now();
    for (int r = 0; r < options.worldSize; ++r) {
      auto b = read(kBeatKey + std::to_string(r));
      if (!b) continue;
      auto& s = seen[r];
      const auto counter = b->value("beat", std::int64_t{0});
      if (counter != s.counter) {
        s.counter = counter;
        s.beatChanged = now;
      }
      const std::pair<std::int64_t, std::uint64_t> progress{
          b->value("step", std::int64_t{0}), b->value("collectives", std::uint64_t{0})};
      if (progress != s.progress) {
        s.progress = progress;
        s.progressed = now;
      }
      s.beat = std::move(*b);
    }
  }

  static std::string where(const json& b) {
    return fmt::format("step {}, phase {}", b.value("step", 0), b.value("phase", std::string("?")));
  }

  // A rank's own error; a lost peer alone is a consequence, whose cause is found otherwise.
  std::optional<json> judgeFailure() {
    for (const auto& [r, s] : seen) {
      if (s.beat.value("state", std::string()) != "failed" || s.beat.value("peer_loss", false)) {
        continue;
      }
      return json{{"kind", "failed"},
                  {"culprit", r},
                  {"step", s.beat.value("step", 0)},
                  {"phase", s.beat.value("phase", "")},
                  {"summary", fmt::format("rank {} failed at {}: {}", r, where(s.beat),
                                          s.beat.value("error", std::string()))}};
    }
    return std::nullopt;
  }

  std::optional<json> judgeDesync() {
    // The lowest rank's record of each sequence number is the reference.
    std::map<std::uint64_t, std::pair<int, CollectiveRecord>> reference;
    for (const auto& [r, s] : seen) {
      for (const auto& j : s.beat.value("recent", json::array())) {
        const auto record = recordFrom(j);
        auto [it, inserted] = reference.try_emplace(record.seq, r, record);
        if (inserted || it->second.second.sameCollective(record)) continue;
        const auto& [otherRank, other] = it->second;
        return json{{"kind", "desync"},
                    {"culprit", r},
                    {"ranks", {otherRank, r}},
                    {"step", s.beat.value("step", 0)},
                    {"phase", s.beat.value("phase", "")},
                    {"seq", record.seq},
                    {"summary",
                     fmt::format("desync: at collective #{} rank {} issued {} while rank "
                                 "{} issued {}: the ranks run different collectives "
                                 "(a program bug: every rank must issue the same "
                                 "collectives in the same order)",
                                 record.seq, otherRank, other.operation(), r, record.operation())}};
      }
    }
    return std::nullopt;
  }

  std::optional<json> judgeDead(Clock::time_point now) {
    for (const auto& [r, s] : seen) {
      const auto state = s.beat.value("state", std::string());
      // A rank that reported its failure is not silent: it said why (judgeFailure).
      if (state == "finished" || state == "failed" || now - s.beatChanged < options.deadAfter) {
        continue;
      }
      const double silent = seconds(now - s.beatChanged);
      std::string how = "its process is gone or frozen";
      if (s.beat.value("host", std::string()) == env::thisHostName()) {
        const int pid = s.beat.value("pid", 0);
        const char processState = health::processState(pid);
        how = processState == '\0'  ? fmt::format("its process (pid {}) is gone", pid)
              : processState == 'T' ? fmt::format("its process (pid {}) is stopped (SIGSTOP?)", pid)
              : processState == 'Z' ? fmt::format("its process (pid {}) exited", pid)
                                    : fmt::format("its process (pid {}) is there but silent", pid);
      }
      return json{{"kind", "dead"},
                  {"culprit", r},
                  {"step", s.beat.value("step", 0)},
                  {"phase", s.beat.value("phase", "")},
                  {"pid", s.beat.value("pid", 0)},
                  {"host", s.beat.value("host", "")},
                  {"summary", fmt::format("rank {} ({}) stopped beating {:.1f} s ago at {}: {}", r,
                                          s.beat.value("host", std::string("?")), silent,
                                          where(s.beat), how)}};
    }
    return std::nullopt;
  }

  // Note [Hang bound].
  std::optional<std::chrono::duration<double>> hangBound() {
    double slowestStep = 0, slowestCheckpoint = 0;
    bool inCheckpoint = false;
    for (const auto& [r, s] : seen) {
      if (!s.beat.value("stepping", false)) return std::nullopt;
      slowestStep = std::max(slowestStep, s.beat.value("slowest_step_s", 0.0));
      slowestCheckpoint = std::max(slowestCheckpoint, s.beat.value("slowest_checkpoint_s", 0.0));
      inCheckpoint |= s.beat.value("phase", std::string()) == "checkpoint";
    }
    return std::chrono::duration<double>(hangBoundSeconds(
        options.hangTimeout ? std::chrono::duration<double>(*options.hangTimeout).count() : 0,
        slowestStep, slowestCheckpoint, inCheckpoint));
  }

  std::optional<json> judgeHang(Clock::time_point now) {
    if (static_cast<int>(seen.size()) < options.worldSize) return std::nullopt;
    const auto bound = hangBound();
    if (!bound) return std::nullopt;
    Clock::time_point lastProgress{};
    std::uint64_t maxSeq = 0;
    for (const auto& [r, s] : seen) {
      if (s.beat.value("state", std::string()) == "finished") return std::nullopt;
      lastProgress = std::max(lastProgress, s.progressed);
      maxSeq = std::max(maxSeq, s.progress.second);
    }
    if (now - lastProgress < *bound) return std::nullopt;
    std::vector<int> behind, waiting;
    for (const auto& [r, s] : seen) (s.progress.second < maxSeq ? behind : waiting).push_back(r);
    if (behind.empty()) {
      waiting.clear();
      for (const auto& [r, s] : seen) {
        (s.beat.value("phase", std::string()) == "communication" ? waiting : behind).push_back(r);
      }
    }
    auto lastCollective = [](const json& b) -> std::string {
      const auto recent = b.value("recent", json::array());
      return recent.empty() ? std::string("none yet") : recordFrom(recent.back()).describe();
    };
    json v = {{"kind", "hung"},
              {"bound_s", bound->count()},
              {"waiting", waiting},
              {"ranks", behind},
              {"culprit", behind.empty() ? -1 : behind.front()}};
    if (behind.empty() || behind.size() == seen.size()) {
      const auto& b = seen.begin()->second.beat;
      v["step"] = b.value("step", 0);
      v["phase"] = b.value("phase", "");
      v["summary"] = fmt::format(
          "no rank made progress for {:.0f} s (hang bound {:.0f} s); ranks {} all wait, the "
          "newest collective of rank {} is {}: a collective that does not complete (a cut "
          "link, a stuck network) or {}",
          seconds(now - lastProgress), bound->count(), rankList(waiting.empty() ? behind : waiting),
          seen.begin()->first, lastCollective(b),
          behind.empty() ? "a desync" : "every rank stuck outside collectives");
      return v;
    }
    const auto& culprit = seen[behind.front()].beat;
    const auto& waiter = seen[waiting.front()].beat;
    v["step"] = culprit.value("step", 0);
    v["phase"] = culprit.value("phase", "");
    v["seq"] = seen[behind.front()].progress.second;
    v["summary"] = fmt::format(
        "rank{} {} stalled in {} at step {}, {:.0f} s since {} last collective ({}); rank{} {} "
        "wait{} in {} (hang bound {:.0f} s)",
        behind.size() > 1 ? "s" : "", rankList(behind), culprit.value("phase", std::string("?")),
        culprit.value("step", 0), culprit.value("since_collective_s", 0.0),
        behind.size() > 1 ? "their" : "its", lastCollective(culprit), waiting.size() > 1 ? "s" : "",
        rankList(waiting), waiting.size() > 1 ? "" : "s", lastCollective(waiter), bound->count());
    return v;
  }

  std::optional<json> judge() {
    observe();
    const auto now = Clock::now();
    if (auto v = judgeDesync()) return v;  // it explains the failures that follow it
    if (auto v = judgeFailure()) return v;
    if (auto v = judgeDead(now)) return v;
    return judgeHang(now);
  }

  // --- acting on a verdict ----------------------------------------------------------------

  json ownRecords() {
    try {
      // c10d's own recorders: ProcessGroupGloo's (the default one) or ProcessGroupNCCL's.
#if HAVE_NCCL
      const auto text = options.ncclRecords
                            ? c10d::dump_nccl_trace_json(/*includeCollectives=*/true,
                                                         /*onlyActive=*/false)
                            : c10d::dump_fr_trace_json(true, false);
#else
      const auto text = c10d::dump_fr_trace_json(/*includeCollectives=*/true, /*onlyActive=*/false);
#endif
      auto parsed = json::parse(text, nullptr, false);
      if (!parsed.is_discarded()) return parsed;
    } catch (const std::exception& e) {
      return json{{"error", e.what()}};
    }
    return json{{"error", "the flight recorder's dump is not JSON"}};
  }

  // `useStore` false: the store does not answer (a call would block), this rank's records
  // stay in its own error file.
  [[noreturn]] void act(json verdict, bool useStore = true) {
    const int culprit = verdict.value("culprit", -1);
    const bool desync = verdict.value("kind", std::string()) == "desync";
    const std::string summary = verdict.value("summary", std::string("the job failed"));
    log::error("health", "{}", summary);
    json section = verdict;
    section["this_rank"] = beat();
    const auto records = ownRecords();
    try {
      const auto text = records.dump();
      if (useStore) {
        store->set(kRecordsKey + std::to_string(options.rank),
                   std::vector<uint8_t>(text.begin(), text.end()));
      }
    } catch (const std::exception&) {
      // The store is gone: this rank's records stay in its own error file.
    }
    section["flight_recorder"] = {{std::to_string(options.rank), records}};
    if (culprit == options.rank && verdict.value("kind", std::string()) == "hung") {
      section["stacks"] = threadStacks(getpid());
    }
    if (options.rank == 0 && useStore) {  // every reachable rank's records in one report
      const auto deadline = Clock::now() + kGatherRecords;
      for (int r = 1; r < options.worldSize; ++r) {
        // A silent or finished rank publishes none: do not wait for it. A failing one reads
        // the verdict while it fails (Note [Desync at a failure]): the store stays up for it.
        // So does a hung culprit whose watchdog still beats: it publishes its records as soon
        // as it has read the verdict, then takes its own stacks. Rank 0 leaving before that
        // took the store with it, and the culprit, finding the store lost, took no stacks
        // (seen once in CI on a busy machine).
        const auto it = seen.find(r);
        if (it == seen.end() || it->second.beat.value("state", std::string()) == "finished" ||
            Clock::now() - it->second.beatChanged > 2 * options.interval) {
          continue;
        }
        while (Clock::now() < deadline) {
          try {
            if (auto j = read(kRecordsKey + std::to_string(r))) {
              section["flight_recorder"][std::to_string(r)] = std::move(*j);
              break;
            }
          } catch (const std::exception&) {
            break;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }
    writeErrorRecord(summary, culprit != options.rank, section);
    // Nothing is lost on the way out: a checkpoint being written is finished first.
    const auto deadline = Clock::now() + kFinishCheckpoint;
    while ((snapshot().phase == Phase::kCheckpoint || savingInBackground()) &&
           Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    log::flush();
    std::fflush(nullptr);
    _exit(desync ? kExitDesync : kExitTransient);
  }

  static void writeErrorRecord(const std::string& message, bool peerLoss, const json& section) {
    const char* path = std::getenv(env::var::kTorchelasticErrorFile);
    if (path == nullptr || *path == '\0') return;
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    const json record = {
        {"message",
         {{"message", "ddp::health: " + message},
          {"extraInfo",
           {{"py_callstack", ""},
            {"timestamp",
             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count())},
            {"ddprun_time_ns",
             std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count())},
            {"ddprun_peer_loss", peerLoss},
            {"ddprun_health", section}}}}}};
    std::ofstream out(path, std::ios::trunc);
    out << record.dump() << "\n";
  }

  // --- the thread -------------------------------------------------------------------------

  void tick() {
    tickStartedNs.store(Clock::now().time_since_epoch().count());
    publish(beat());
    if (auto verdict = read(kVerdictKey)) act(std::move(*verdict));
    if (options.rank == 0) {
      if (auto verdict = judge()) {
        const auto text = verdict->dump();
        store->set(kVerdictKey, std::vector<uint8_t>(text.begin(), text.end()));
        act(std::move(*verdict));
      }
    } else if (!rankZeroBeats) {
      rankZeroBeats = store->check({kBeatKey + "0"});
    }
    tickStartedNs.store(0);
  }

  // The store's client may block far longer than its timeout when rank 0 stops answering
  // without closing the connection (SIGSTOP, a cut link): a tick that takes longer than
  // deadAfter means rank 0's store is lost.
  void guard() {
    std::unique_lock<std::mutex> lock(guardMutex);
    while (!guardWake.wait_for(lock, options.interval / 2, [&] { return stopping.load(); })) {
      const auto started = tickStartedNs.load();
      if (started == 0 || failed.load() || options.rank == 0 || !rankZeroBeats) continue;
      const auto blocked = Clock::now() - Clock::time_point(Clock::duration(started));
      if (blocked < options.deadAfter) continue;
      act(json{{"kind", "store_lost"},
               {"culprit", 0},
               {"step", snapshot().step},
               {"phase", std::string(phaseName(snapshot().phase))},
               {"summary",
                fmt::format("rank {} gets no answer from rank 0's store at {}:{} for "
                            "{:.1f} s: rank 0 is stopped or frozen, or the network "
                            "to it is down",
                            options.rank, options.storeHost, options.storePort, seconds(blocked))}},
          /*useStore=*/false);
    }
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!wake.wait_for(lock, options.interval, [&] { return stopping.load(); })) {
      if (failed.load()) continue;  // the program reports and exits by itself
      try {
        tick();
      } catch (const std::exception& e) {
        if (stopping || failed.load()) break;
        // Rank 0's store is gone (it died or stopped) or answers no more: this rank cannot
        // go on. A rank 0 without a watchdog (a Python rank 0) ends as it likes.
        if (options.rank == 0 || !rankZeroBeats) break;
        // Rank 0 closed the connection: it exited, maybe after an error of its own or a
        // lost peer of its own, which its error names. Who caused it is not known here.
        act(json{{"kind", "store_lost"},
                 {"culprit", -1},
                 {"step", snapshot().step},
                 {"phase", std::string(phaseName(snapshot().phase))},
                 {"summary",
                  fmt::format("rank {} lost rank 0's store at {}:{} (rank 0 died, was "
                              "stopped, or its host is unreachable): {}",
                              options.rank, options.storeHost, options.storePort, e.what())}});
      }
    }
  }

  void finish() {
    state = "finished";
    try {
      publish(beat());
      if (options.rank != 0) return;
      // The others still use this store until they finish: keep it up for them (bounded).
      const auto deadline = Clock::now() + kWaitForOthersToFinish;
      while (Clock::now() < deadline) {
        observe();
        bool all = true;
        const auto now = Clock::now();
        for (int r = 1; r < options.worldSize; ++r) {
          const auto it = seen.find(r);
          if (it == seen.end()) continue;  // never beat (a Python rank): nothing to wait for
          const auto s = it->second.beat.value("state", std::string());
          all &=
              s == "finished" || s == "failed" || now - it->second.beatChanged > options.deadAfter;
        }
        if (all) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    } catch (const std::exception&) {
      // The store is already gone: nothing to tell anyone.
    }
  }
};

void installTerminateHandler();  // below noteFailure, which it calls

namespace {
std::mutex gRunningMutex;
Watchdog::Impl* gRunning = nullptr;
}  // namespace

Watchdog::Watchdog(const WatchdogOptions& options) : impl_(std::make_unique<Impl>(options)) {
  installTerminateHandler();
  impl_->publish(impl_->beat());
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  impl_->guardThread = std::thread([impl = impl_.get()] { impl->guard(); });
  std::lock_guard<std::mutex> lock(gRunningMutex);
  gRunning = impl_.get();
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(gRunningMutex);
    gRunning = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    std::lock_guard<std::mutex> guardLock(impl_->guardMutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  impl_->guardWake.notify_all();
  impl_->thread.join();
  impl_->guardThread.join();
  if (!impl_->failed.load() && std::uncaught_exceptions() == 0) impl_->finish();
}

void noteFailure(const std::string& message, bool peerLoss) {
  std::lock_guard<std::mutex> lock(gRunningMutex);
  if (gRunning == nullptr) return;
  Watchdog::Impl& w = *gRunning;
  w.failed.store(true);
  std::lock_guard<std::mutex> stateLock(w.mutex);  // the thread is between ticks
  w.state = "failed";
  w.error = message;
  w.peerLoss = peerLoss;
  try {
    w.publish(w.beat());
    // Note [Desync at a failure]: Gloo fails a mismatched collective at once (a size
    // mismatch aborts the rank, the others lose it), long before a tick would compare.
    // So the failing rank compares now, giving the others a moment to publish the
    // collective it failed in; a desync found ends it, and the others, with kExitDesync.
    const std::uint64_t mine = snapshot().collectives;
    const auto deadline = Clock::now() + kDesyncLookAtFailure;
    for (;;) {
      if (auto verdict = w.read(kVerdictKey);
          verdict && verdict->value("kind", std::string()) == "desync") {
        w.act(std::move(*verdict));
      }
      w.observe();
      if (auto verdict = w.judgeDesync()) {
        const auto text = verdict->dump();
        w.store->set(kVerdictKey, std::vector<uint8_t>(text.begin(), text.end()));
        w.act(std::move(*verdict));
      }
      const bool othersCaughtUp = std::all_of(w.seen.begin(), w.seen.end(), [&](const auto& e) {
        return e.second.progress.second >= mine || e.second.beat.value("state", "") != "running";
      });
      if (othersCaughtUp || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception&) {
    // The store is gone: the exit code and the error file still tell it.
  }
}

void installTerminateHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    static const std::terminate_handler previous = std::get_terminate();
    std::set_terminate([] {
      // Gloo's checks throw on its own threads (a collective's size mismatch): the process
      // ends here. Its error, and a desync it reveals, still reach the others.
      std::string message = "terminate called without an active exception";
      if (auto error = std::current_exception()) {
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
          message = "terminate called after throwing a non-std exception";
        }
      }
      noteFailure(message, false);
      if (previous) previous();
      std::abort();
    });
  });
}

}  // namespace ddp::health
