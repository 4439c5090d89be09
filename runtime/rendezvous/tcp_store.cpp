#include "runtime/rendezvous/tcp_store.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/log/logging.h"

namespace ddp::rendezvous {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Connects a non-blocking socket to one resolved address within `timeout`.
std::string connectOnce(const addrinfo& address, std::chrono::milliseconds timeout) {
  int fd = socket(address.ai_family, address.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  address.ai_protocol);
  if (fd < 0) return fmt::format("socket: {}", std::strerror(errno));
  std::string cause;
  if (connect(fd, address.ai_addr, address.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      cause = std::strerror(errno);
    } else {
      pollfd pfd{fd, POLLOUT, 0};
      const int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
      int error = 0;
      socklen_t length = sizeof(error);
      if (ready == 0) {
        cause = fmt::format("no answer within {} ms", timeout.count());
      } else if (ready < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
        cause = std::strerror(errno);
      } else if (error != 0) {
        cause = std::strerror(error);
      }
    }
  }
  close(fd);
  return cause;
}

RendezvousError hostingError(std::uint16_t port, const std::string& cause) {
  return RendezvousError(
      fmt::format("rank 0 could not host the rendezvous store on port {}: {}\n---> HINT: another "
                  "process (an earlier run?) may hold the port; choose another MASTER_PORT / "
                  "--master-port, or wait for it to exit.",
                  port, cause));
}

// A socket bound (not yet listening) for rank 0's store; c10d's server takes it over.
struct BoundSocket {
  int fd = -1;
  std::string host;  // the numeric address bound: what rank 0's own client connects to
  std::uint16_t port = 0;
};

// Note [Where the store listens]: binds masterAddr:port when masterAddr resolves to an
// address of this host; nullopt (and `whyNot`) when it does not, and only the wildcard
// will do. Throws RendezvousError when the address is this host's but the bind fails
// (the port is taken).
std::optional<BoundSocket> bindMasterAddress(const std::string& masterAddr, std::uint16_t port,
                                             std::string& whyNot) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const int rc = getaddrinfo(masterAddr.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (rc != 0) {
    whyNot = fmt::format("{} does not resolve here ({})", masterAddr, gai_strerror(rc));
    return std::nullopt;
  }
  std::optional<BoundSocket> bound;
  std::string others;
  int error = 0;
  for (auto* a = addresses; a && !bound && error == 0; a = a->ai_next) {
    char text[NI_MAXHOST] = {};
    getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof(text), nullptr, 0, NI_NUMERICHOST);
    const int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = errno;
      break;
    }
    // As c10d does: a restarted master rebinds while old connections are in TIME_WAIT.
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) {
      sockaddr_storage local{};
      socklen_t length = sizeof(local);
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
      const auto boundPort = local.ss_family == AF_INET
                                 ? reinterpret_cast<sockaddr_in*>(&local)->sin_port
                                 : reinterpret_cast<sockaddr_in6*>(&local)->sin6_port;
      bound = BoundSocket{fd, text, ntohs(boundPort)};
    } else {
      // EADDRNOTAVAIL: not an address of this host; anything else ends the search.
      if (errno != EADDRNOTAVAIL) error = errno;
      others += (others.empty() ? "" : ", ") + std::string(text);
      close(fd);
    }
  }
  freeaddrinfo(addresses);
  if (error != 0)
    throw hostingError(port, fmt::format("bind {}: {}", masterAddr, std::strerror(error)));
  if (!bound) {
    whyNot = others == masterAddr
                 ? fmt::format("{} is not an address of this host", masterAddr)
                 : fmt::format("{} ({}) is not an address of this host", masterAddr, others);
  }
  return bound;
}

}  // namespace

bool isThisHostsAddress(const std::string& host) {
  std::string whyNot;
  try {
    const auto bound = bindMasterAddress(host, /*port=*/0, whyNot);
    if (!bound) return false;
    close(bound->fd);
    return true;
  } catch (const RendezvousError&) {
    return false;  // not even port 0 binds: no socket of ours can live there
  }
}

std::string probeTcp(const std::string& host, std::uint16_t port,
                     std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses);
  if (rc != 0) {
    return fmt::format("host name '{}' does not resolve ({})", host, gai_strerror(rc));
  }
  std::string cause;
  for (auto* a = addresses; a; a = a->ai_next) {
    cause = connectOnce(*a, timeout);
    if (cause.empty()) break;
  }
  freeaddrinfo(addresses);
  if (cause == std::strerror(ECONNREFUSED)) cause += " (nothing listens on the port yet)";
  return cause;
}

c10::intrusive_ptr<c10d::TCPStore> connectTcpStore(const TcpStoreOptions& options) {
  TORCH_CHECK(options.worldSize >= 1, "world size must be >= 1, got ", options.worldSize);
  TORCH_CHECK(options.rank >= 0 && options.rank < options.worldSize, "rank ", options.rank,
              " outside [0, ", options.worldSize, ")");
  const auto start = Clock::now();
  c10d::TCPStoreOptions storeOptions;
  storeOptions.port = options.masterPort;
  storeOptions.numWorkers = static_cast<std::size_t>(options.worldSize);
  // waitWorkers on a client means "announce myself" (add 1 to the store's init key),
  // which a PyTorch master counts before it returns: clients always announce. Our
  // master does not wait: under the MPI bootstrap it must broadcast its endpoint
  // before anyone can join, and the process group's setup waits for everyone anyway.
  storeOptions.timeout = options.timeout;

  if (options.rank == 0) {
    storeOptions.isServer = true;
    storeOptions.waitWorkers = false;
    // Note [Where the store listens] in tcp_store.h.
    std::string whyNot;
    const auto bound = bindMasterAddress(options.masterAddr, options.masterPort, whyNot);
    std::string clientHost = "127.0.0.1";
    if (bound) {
      // The libuv backend (c10d's default) and the legacy one both take the socket over,
      // and close it with the store; the port must be the one it is bound to.
      storeOptions.masterListenFd = bound->fd;
      storeOptions.port = bound->port;
      clientHost = bound->host;
    } else {
      log::info("rendezvous",
                "event=store_bind_all_interfaces reason=\"{}\" port={} (the store listens on "
                "every interface; see the README's threat model)",
                whyNot, options.masterPort);
    }
    try {
      auto store = c10::make_intrusive<c10d::TCPStore>(clientHost, storeOptions);
      log::debug("rendezvous", "event=store_hosted bind={} port={} world_size={}",
                 bound ? bound->host : "*", store->getPort(), options.worldSize);
      return store;
    } catch (const c10::DistError& e) {
      throw hostingError(options.masterPort, e.what_without_backtrace());
    }
  }

  // Note [Waiting for the master] in tcp_store.h.
  const auto deadline = start + options.timeout;
  auto delay = kFirstRetryDelay;
  std::string cause;
  for (int attempt = 1;; ++attempt) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    cause = probeTcp(options.masterAddr, options.masterPort,
                     std::clamp(remaining, std::chrono::milliseconds(1), kConnectAttemptTimeout));
    if (cause.empty()) break;
    const auto left = deadline - Clock::now();
    if (left <= std::chrono::milliseconds(0)) {
      throw RendezvousError(fmt::format(
          "rendezvous timed out after {:.1f} s: rank {} could not reach the master's store "
          "at {}:{} ({} attempts; last: {}).\n---> HINT: likely causes: the master (rank 0) "
          "has not started or has crashed; MASTER_ADDR/MASTER_PORT differ between ranks; the "
          "master's DNS name is not published yet (a Kubernetes headless service resolves "
          "once the pod is Ready); a firewall or NetworkPolicy blocks the port. Wait longer "
          "with --rdzv-timeout or DDPRUN_RDZV_TIMEOUT (seconds).",
          secondsSince(start), options.rank, options.masterAddr, options.masterPort, attempt,
          cause));
    }
    if (options.betweenAttempts) options.betweenAttempts();
    const auto sleep = std::min<std::chrono::milliseconds>(
        delay, std::chrono::duration_cast<std::chrono::milliseconds>(left));
    log::atLevel(
        Clock::now() - start < kQuietWaitForMaster ? log::Level::kDebug : log::Level::kInfo,
        "rendezvous",
        "event=master_unreachable attempt={} master={}:{} cause=\"{}\" "
        "retry_in_ms={}",
        attempt, options.masterAddr, options.masterPort, cause, sleep.count());
    std::this_thread::sleep_for(sleep);
    delay = std::min(delay * 2, kMaxRetryDelay);
  }

  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  storeOptions.isServer = false;
  storeOptions.waitWorkers = true;
  storeOptions.timeout = std::max(left, std::chrono::milliseconds(1000));
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(options.masterAddr, storeOptions);
    // Store operations (the group's key exchange) get the whole rendezvous timeout.
    store->setTimeout(options.timeout);
    log::debug("rendezvous", "event=store_connected master={}:{} elapsed_s={:.2f}",
               options.masterAddr, options.masterPort, secondsSince(start));
    return store;
  } catch (const c10::DistError& e) {
    throw RendezvousError(fmt::format(
        "rank {} reached {}:{} but the store did not answer: {}\n---> HINT: is something "
        "other than the master's rendezvous store listening on that port?",
        options.rank, options.masterAddr, options.masterPort, e.what_without_backtrace()));
  }
}

}  // namespace ddp::rendezvous
