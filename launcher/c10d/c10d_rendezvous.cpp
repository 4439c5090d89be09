#include "launcher/c10d/c10d_rendezvous.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/log/logging.h"
#include "runtime/rendezvous/tcp_store.h"

namespace ddp::launcher {
namespace {

using Clock = std::chrono::steady_clock;

// How often a node waiting for its round to close looks at the store: the round closes
// within this of its last-call deadline, or of the MAX-th arrival.
constexpr std::chrono::milliseconds kRoundPollInterval{50};

std::string text(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Resolved {
  addrinfo* list = nullptr;
  ~Resolved() {
    if (list) freeaddrinfo(list);
  }
};

std::string numericHost(const sockaddr* address, socklen_t length) {
  char host[NI_MAXHOST] = {};
  getnameinfo(address, length, host, sizeof(host), nullptr, 0, NI_NUMERICHOST);
  return host;
}

// The local address of a UDP socket connected to host:port: the address the others reach
// this node at, as the kernel routes toward the endpoint (no packet is sent).
std::string localAddressToward(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  Resolved resolved;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &resolved.list);
  if (rc != 0) {
    throw RendezvousFailed(fmt::format(
        "the rendezvous endpoint {}:{} does not resolve ({}).\n---> HINT: check "
        "--rdzv-endpoint (PET_RDZV_ENDPOINT); in Kubernetes the host's service name resolves "
        "once its pod is Ready. Or pass --local-addr.",
        host, port, gai_strerror(rc)));
  }
  std::string why;
  for (auto* a = resolved.list; a; a = a->ai_next) {
    const int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      sockaddr_storage local{};
      socklen_t length = sizeof(local);
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
      close(fd);
      return numericHost(reinterpret_cast<sockaddr*>(&local), length);
    }
    why = std::strerror(errno);
    close(fd);
  }
  throw RendezvousFailed(fmt::format(
      "no route from this node to the rendezvous endpoint {}:{} ({}).\n---> HINT: pass this "
      "node's address with --local-addr.",
      host, port, why));
}

// A port free on `address` now, for the workers' master store (node rank 0 of a round).
int freePortOn(const std::string& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
  Resolved resolved;
  if (getaddrinfo(address.c_str(), "0", &hints, &resolved.list) == 0) {
    for (auto* a = resolved.list; a; a = a->ai_next) {
      const int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) {
        sockaddr_storage local{};
        socklen_t length = sizeof(local);
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
        close(fd);
        return local.ss_family == AF_INET
                   ? ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port)
                   : ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
      }
      close(fd);
    }
  }
  throw RendezvousFailed(fmt::format(
      "node rank 0 cannot bind a port on its own address {} for the workers' master ({}).\n"
      "---> HINT: pass the address of one of this node's interfaces with --local-addr.",
      address, std::strerror(errno)));
}

// RendezvousConfig::pendingStopSignal: a signal ends the wait.
void throwIfSignalled(const RendezvousConfig& config, const std::string& during) {
  if (!config.pendingStopSignal) return;
  if (const int signal = config.pendingStopSignal()) {
    throw RendezvousFailed(
        fmt::format("interrupted by signal {} ({}) while {}", signal, strsignal(signal), during));
  }
}

struct Member {
  std::string nodeId;
  std::string address;
  int localWorkers = 0;
};

Member parseMember(const std::string& value) {
  Member member;
  std::istringstream in(value);
  in >> member.nodeId >> member.address >> member.localWorkers;
  return member;
}

}  // namespace

C10dRendezvous::C10dRendezvous(RendezvousConfig config, c10::intrusive_ptr<c10d::Store> store,
                               std::string address, bool hosting)
    : config_(std::move(config)),
      store_(std::move(store)),
      address_(std::move(address)),
      hosting_(hosting) {
  try {
    store_->setTimeout(config_.readTimeout);
    nodeId_ = "node" + std::to_string(store_->add(key("node_ids"), 1));
    store_->add(key("hb/" + nodeId_), 1);
    heartbeatStore_ = store_->clone();
  } catch (const c10::Error& e) {
    storeLost("joining", e.what_without_backtrace());
  }
  heartbeatThread_ = std::thread([this] { heartbeatLoop(); });
  log::info("rendezvous", "event=rdzv_node node_id={} address={} endpoint={} run_id={} host={}",
            nodeId_, address_, config_.endpoint(), config_.runId, hosting_);
}

C10dRendezvous::~C10dRendezvous() {
  stopping_ = true;
  if (heartbeatThread_.joinable()) heartbeatThread_.join();
}

std::string C10dRendezvous::key(const std::string& name) const {
  return "/ddprun/rdzv/" + config_.runId + "/" + name;
}

std::string C10dRendezvous::roundKey(int round, const std::string& name) const {
  return key("r" + std::to_string(round) + "/" + name);
}

std::optional<std::string> C10dRendezvous::tryGet(const std::string& name) {
  if (!store_->check({name})) return std::nullopt;
  return text(store_->get(name));
}

void C10dRendezvous::heartbeatLoop() {
  const std::string beat = key("hb/" + nodeId_);
  auto next = Clock::now();
  while (!stopping_) {
    next += config_.keepAliveInterval;
    try {
      heartbeatStore_->add(beat, 1);
    } catch (const c10::Error& e) {
      // The main thread hears of it at its next store operation and says what it means.
      log::debug("rendezvous", "event=heartbeat_failed node_id={} cause=\"{}\"", nodeId_,
                 e.what_without_backtrace());
    }
    // Short sleeps, so that the destructor is not held up by a long interval.
    while (!stopping_ && Clock::now() < next) {
      std::this_thread::sleep_for(
          std::min<Clock::duration>(std::chrono::milliseconds(50), next - Clock::now()));
    }
  }
}

void C10dRendezvous::storeLost(const std::string& during, const std::string& what) const {
  throw RendezvousFailed(fmt::format(
      "the rendezvous store at {} stopped answering while {} (node {}: {}).\n---> HINT: the "
      "store lives in the ddprun of the host node (the endpoint's address, or is_host=true): "
      "when that node dies or leaves, the job ends, as with torchrun's c10d backend. Restart "
      "the job (a PyTorchJob restarts its pods).",
      config_.endpoint(), during, nodeId_, what));
}

RendezvousRound C10dRendezvous::nextRound() {
  const auto start = Clock::now();
  const auto deadline = start + config_.joinTimeout;
  try {
    store_->compareSet(key("round_hint"), "", "0");
    int round = std::stoi(text(store_->get(key("round_hint"))));
    if (current_) round = std::max(round, current_->round + 1);
    while (true) {
      throwIfSignalled(config_, "waiting for a rendezvous round");
      stopIfTheJobEnded();
      if (store_->check({roundKey(round, "closed")})) {
        ++round;  // closed before we came: the next may be open
        continue;
      }
      const int index = static_cast<int>(store_->add(roundKey(round, "joined"), 1)) - 1;
      store_->set(roundKey(round, "node/" + std::to_string(index)),
                  fmt::format("{} {} {}", nodeId_, address_, config_.localWorkers));
      log::info("rendezvous", "event=rdzv_joined round={} arrival={} min_nodes={} max_nodes={}",
                round, index, config_.minNodes, config_.maxNodes);

      int admitted = 0;
      int seen = 0;
      bool spare = false;
      std::optional<Clock::time_point> lastCallEnd;
      while (true) {
        throwIfSignalled(config_, fmt::format("waiting for round {} to close", round));
        if (auto closed = tryGet(roundKey(round, "closed"))) {
          admitted = std::stoi(*closed);
          break;
        }
        stopIfTheJobEnded();
        const int joined = static_cast<int>(store_->add(roundKey(round, "joined"), 0));
        const auto now = Clock::now();
        int closeWith = 0;
        const bool nowSpare = previousRoundRunsFull(round, joined);
        if (nowSpare && !spare) {
          log::info("rendezvous",
                    "event=rdzv_spare round={}: the job runs with MAX {} nodes; this node "
                    "waits as a spare and joins when a member leaves or re-forms",
                    round, config_.maxNodes);
        }
        spare = nowSpare;
        if (spare) {
          lastCallEnd.reset();
        } else if (joined >= config_.maxNodes) {
          closeWith = config_.maxNodes;
        } else if (joined >= config_.minNodes) {
          // Every arrival past MIN extends the last call, as in torchelastic.
          if (joined != seen || !lastCallEnd) lastCallEnd = now + config_.lastCallTimeout;
          if (now >= *lastCallEnd) closeWith = joined;
        }
        seen = joined;
        if (closeWith > 0) {
          store_->compareSet(roundKey(round, "closed"), "", std::to_string(closeWith));
          continue;  // read back what was written first: ours, or another member's count
        }
        if (now >= deadline && spare) {
          throw RendezvousFailed(fmt::format(
              "rendezvous timed out after {:.1f} s (join_timeout) waiting as a spare for round "
              "{} of job {} at {}: the job ran with MAX {} nodes all that time and none left."
              "\n---> HINT: raise --nnodes MAX to use this node, or wait longer with "
              "--rdzv-conf join_timeout=SECONDS.",
              secondsSince(start), round, config_.runId, config_.endpoint(), config_.maxNodes));
        }
        if (now >= deadline) {
          throw RendezvousFailed(fmt::format(
              "rendezvous timed out after {:.1f} s (join_timeout) waiting for round {} of job "
              "{} at {}: {}/{} nodes joined (MIN {}, MAX {}).\n---> HINT: start the other "
              "nodes with the same --rdzv-endpoint and --rdzv-id, or lower --nnodes MIN; "
              "wait longer with --rdzv-conf join_timeout=SECONDS.",
              secondsSince(start), round, config_.runId, config_.endpoint(), joined,
              config_.minNodes, config_.minNodes, config_.maxNodes));
        }
        std::this_thread::sleep_for(kRoundPollInterval);
      }
      if (index >= admitted) {
        log::info("rendezvous",
                  "event=rdzv_waiting round={} closed_with={} arrival={}: joining round {}", round,
                  admitted, index, round + 1);
        ++round;
        continue;
      }

      RendezvousRound result;
      result.round = round;
      result.nodeRank = index;
      result.nnodes = admitted;
      result.worldSize = 0;
      std::vector<Member> members;
      for (int i = 0; i < admitted; ++i) {
        members.push_back(
            parseMember(text(store_->get(roundKey(round, "node/" + std::to_string(i))))));
        if (i < index) result.firstGlobalRank += members.back().localWorkers;
        result.worldSize += members.back().localWorkers;
        result.members.push_back(members.back().nodeId);
      }
      if (index == 0) {
        store_->set(roundKey(round, "master"),
                    fmt::format("{} {}", address_, freePortOn(address_)));
      }
      std::istringstream master(text(store_->get(roundKey(round, "master"))));
      master >> result.masterAddr >> result.masterPort;
      store_->compareSet(key("round_hint"), std::to_string(round), std::to_string(round + 1));

      heartbeats_.clear();
      for (const auto& member : members) {
        heartbeats_[member.nodeId] = {store_->add(key("hb/" + member.nodeId), 0), Clock::now()};
      }
      current_ = result;
      log::info("rendezvous",
                "event=rdzv_round round={} node_rank={} nnodes={} world_size={} "
                "first_rank={} master={}:{} elapsed_s={:.2f}",
                round, result.nodeRank, result.nnodes, result.worldSize, result.firstGlobalRank,
                result.masterAddr, result.masterPort, secondsSince(start));
      return result;
    }
  } catch (const c10::Error& e) {
    storeLost("forming a round", e.what_without_backtrace());
  }
}

std::string C10dRendezvous::membershipChange() {
  if (!current_ || finishedSeen_) return "";
  const int round = current_->round;
  try {
    if (auto reason = tryGet(key("closed"))) return "the job was closed: " + *reason;
    // A member's workers succeeded: the others' are finishing too (rank 0's final
    // evaluation and checkpoint may take a while). Its heartbeat stops when it exits, and a
    // node that joins now finds the job finished: neither is a reason to re-form.
    // Remembered: the host may then stop serving the store (after close_timeout).
    if (store_->check({key("finished")})) {
      finishedSeen_ = true;
      return "";
    }
    // At MAX nodes a newcomer is a spare: only a member that re-formed calls for a round.
    const auto waiting = store_->add(roundKey(round + 1, "joined"), 0);
    if (waiting > 0 && (current_->nnodes < config_.maxNodes ||
                        !previousRoundRunsFull(round + 1, static_cast<int>(waiting)))) {
      return fmt::format(
          "{} node(s) waiting in round {} (a node joined, or a member "
          "re-formed)",
          waiting, round + 1);
    }
    const auto deadAfter = config_.keepAliveInterval * config_.keepAliveMaxAttempt;
    for (auto& [member, seen] : heartbeats_) {
      if (member == nodeId_) continue;
      const auto beats = store_->add(key("hb/" + member), 0);
      const auto now = Clock::now();
      if (beats != seen.first) {
        seen = {beats, now};
      } else if (now - seen.second > deadAfter) {
        return fmt::format(
            "node {}'s heartbeat stopped {:.1f} s ago (the node died or lost "
            "the network)",
            member, std::chrono::duration<double>(now - seen.second).count());
      }
    }
  } catch (const c10::Error& e) {
    return fmt::format("the rendezvous store at {} is unreachable ({})", config_.endpoint(),
                       e.what_without_backtrace());
  }
  return "";
}

bool C10dRendezvous::previousRoundRunsFull(int round, int joined) {
  if (round == 0) return false;
  const auto closed = tryGet(roundKey(round - 1, "closed"));
  if (!closed || std::stoi(*closed) < config_.maxNodes) return false;
  std::set<std::string> running;
  for (int i = 0; i < config_.maxNodes; ++i) {
    if (auto member = tryGet(roundKey(round - 1, "node/" + std::to_string(i)))) {
      running.insert(parseMember(*member).nodeId);
    }
  }
  for (int i = 0; i < joined; ++i) {
    auto arrival = tryGet(roundKey(round, "node/" + std::to_string(i)));
    if (arrival && running.contains(parseMember(*arrival).nodeId)) return false;
  }
  return true;
}

void C10dRendezvous::stopIfTheJobEnded() {
  if (auto reason = tryGet(key("closed"))) {
    leaveRound();
    throw RendezvousFailed("the job " + config_.runId + " was closed: " + *reason +
                           ". This node stops too.");
  }
  if (auto reason = tryGet(key("finished"))) {
    leaveRound();
    throw RendezvousFailed("the job " + config_.runId + " has finished (" + *reason +
                           "); no round is left for this node to join.");
  }
}

void C10dRendezvous::leaveRound() {
  if (current_) store_->add(roundKey(current_->round, "done"), 1);
  current_.reset();
}

void C10dRendezvous::finish(bool succeeded, const std::string& reason) {
  try {
    if (succeeded) {
      store_->compareSet(key("finished"), "", nodeId_ + ": " + reason);
    } else {
      store_->compareSet(key("closed"), "", nodeId_ + ": " + reason);
    }
    if (!current_) return;
    store_->add(roundKey(current_->round, "done"), 1);
    if (!hosting_) return;
    // The others still need the store to finish: keep it up for them, at most closeTimeout.
    const auto deadline = Clock::now() + config_.closeTimeout;
    const auto members = static_cast<int64_t>(current_->members.size());
    while (store_->add(roundKey(current_->round, "done"), 0) < members && Clock::now() < deadline) {
      if (config_.pendingStopSignal && config_.pendingStopSignal()) return;
      std::this_thread::sleep_for(kRoundPollInterval);
    }
  } catch (const c10::Error& e) {
    log::warn("rendezvous", "event=rdzv_finish_failed cause=\"{}\"", e.what_without_backtrace());
  }
}

std::unique_ptr<C10dRendezvous> C10dRendezvous::connect(const RendezvousConfig& config) {
  const std::string address = config.localAddr.empty()
                                  ? localAddressToward(config.endpointHost, config.endpointPort)
                                  : config.localAddr;
  bool hosting = config.isHost.value_or(rendezvous::isThisHostsAddress(config.endpointHost));
  rendezvous::TcpStoreOptions options;
  options.betweenAttempts = [&config] {
    throwIfSignalled(config, "connecting to the rendezvous store at " + config.endpoint());
  };
  options.masterAddr = config.endpointHost;
  options.masterPort = static_cast<std::uint16_t>(config.endpointPort);
  c10::intrusive_ptr<c10d::TCPStore> store;
  if (hosting) {
    options.rank = 0;
    options.worldSize = 1;
    options.timeout = config.readTimeout;
    try {
      store = rendezvous::connectTcpStore(options);
    } catch (const rendezvous::RendezvousError& e) {
      if (config.isHost) throw RendezvousFailed(e.what());
      // Another agent on this host serves the endpoint already (several nodes on one
      // machine, as in tests): join it as a client.
      std::string cause = e.what();
      cause = cause.substr(0, cause.find('\n'));  // its hint is about MASTER_PORT: not ours
      log::info("rendezvous",
                "event=rdzv_not_hosting endpoint={} cause=\"{}\" (joining as a client)",
                config.endpoint(), cause);
      hosting = false;
    }
  }
  if (!hosting) {
    options.rank = 1;
    options.worldSize = 2;
    options.timeout = config.joinTimeout;
    try {
      store = rendezvous::connectTcpStore(options);
    } catch (const rendezvous::RendezvousError& e) {
      throw RendezvousFailed(e.what());
    }
  }
  return std::make_unique<C10dRendezvous>(config, std::move(store), address, hosting);
}

}  // namespace ddp::launcher

// The module's one entry point (kC10dRendezvousEntryPoint): no exception crosses it.
extern "C" __attribute__((visibility("default"))) ddp::launcher::NodeRendezvous*
ddprunCreateC10dRendezvous(const ddp::launcher::RendezvousConfig& config, std::string& error) {
  try {
    return ddp::launcher::C10dRendezvous::connect(config).release();
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}
