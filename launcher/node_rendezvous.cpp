#include "launcher/node_rendezvous.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "launcher/launch_plan.h"
#include "runtime/env/value_parser.h"

namespace ddp::launcher {
namespace {

[[noreturn]] void failValue(const std::string& origin, const std::string& text,
                            const std::string& expected, const std::string& found,
                            const std::string& hint) {
  throw LaunchError(env::describeBadValue(origin, text, expected, found, hint));
}

std::chrono::milliseconds confSeconds(const std::string& key, const std::string& value,
                                      const std::string& origin) {
  const auto parsed = env::parseSeconds(value);
  if (!parsed.value) {
    failValue(origin, key + "=" + value, key + ": " + env::secondsExpectation(), parsed.found, "");
  }
  return *parsed.value;
}

}  // namespace

std::vector<std::string> parseRendezvousConf(const std::string& text, const std::string& origin,
                                             RendezvousConfig& config) {
  // torchrun knows these, but they change nothing here.
  static const std::set<std::string> kIgnoredKeys = {"timeout", "heartbeat_timeout", "store_type",
                                                     "cas_backoff_max_seconds", "use_agent_store"};
  std::vector<std::string> warnings;
  for (const auto& item : env::splitList(text, ',')) {
    if (item.empty()) continue;
    const auto equals = item.find('=');
    if (equals == std::string::npos || equals == 0) {
      failValue(origin, text, "key=value pairs separated by commas",
                "'" + item + "' without a key=value", "");
    }
    const std::string key = item.substr(0, equals);
    const std::string value = item.substr(equals + 1);
    if (key == "join_timeout") {
      config.joinTimeout = confSeconds(key, value, origin);
    } else if (key == "last_call_timeout") {
      config.lastCallTimeout = confSeconds(key, value, origin);
    } else if (key == "close_timeout") {
      config.closeTimeout = confSeconds(key, value, origin);
    } else if (key == "read_timeout") {
      config.readTimeout = confSeconds(key, value, origin);
    } else if (key == "keep_alive_interval") {
      config.keepAliveInterval = confSeconds(key, value, origin);
    } else if (key == "keep_alive_max_attempt") {
      const auto parsed = env::parseInteger(value, 1, 1000);
      if (!parsed.value) {
        failValue(origin, item, "keep_alive_max_attempt " + env::integerExpectation(1, 1000),
                  parsed.found, "");
      }
      config.keepAliveMaxAttempt = static_cast<int>(*parsed.value);
    } else if (key == "is_host") {
      // torchrun's get_as_bool.
      if (value == "1" || value == "true" || value == "True" || value == "TRUE") {
        config.isHost = true;
      } else if (value == "0" || value == "false" || value == "False" || value == "FALSE") {
        config.isHost = false;
      } else {
        failValue(origin, item, "is_host=true or is_host=false (1/0)", "'" + value + "'", "");
      }
    } else if (kIgnoredKeys.count(key) != 0) {
      warnings.push_back(origin + ": " + key +
                         " is a torchrun key that ddprun's c10d rendezvous does not use; ignored");
    } else {
      failValue(origin, text,
                "keys among join_timeout, last_call_timeout, close_timeout, read_timeout, "
                "is_host, keep_alive_interval, keep_alive_max_attempt",
                "the unknown key '" + key + "'", "Check the spelling (torchrun's names).");
    }
  }
  return warnings;
}

void parseRendezvousEndpoint(const std::string& text, const std::string& origin,
                             RendezvousConfig& config) {
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos) {
      failValue(origin, text, "host:port, host or [ipv6]:port", "an unclosed '['", "");
    }
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') failValue(origin, text, "[ipv6]:port", "'" + text + "'", "");
      port = text.substr(close + 2);
    }
  } else if (std::count(text.begin(), text.end(), ':') > 1) {
    failValue(origin, text, "host:port, host or [ipv6]:port", "an IPv6 address without brackets",
              "Write it as [ADDRESS]:PORT.");
  } else if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) {
    failValue(origin, text, "host:port of the node that hosts the rendezvous store", "no host",
              "e.g. --rdzv-endpoint node0:29400");
  }
  config.endpointHost = host;
  if (!port.empty()) {
    const auto parsed = env::parseInteger(port, 1, 65535);
    if (!parsed.value) {
      failValue(origin, text, "a port " + env::integerExpectation(1, 65535), parsed.found, "");
    }
    config.endpointPort = static_cast<int>(*parsed.value);
  }
}

std::unique_ptr<NodeRendezvous> loadC10dRendezvous(const RendezvousConfig& config) {
  std::error_code error;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", error).parent_path();
  std::vector<std::filesystem::path> candidates = {self / kC10dRendezvousModule,
                                                   self / ".." / "lib" / kC10dRendezvousModule};
  std::string tried;
  void* handle = nullptr;
  for (const auto& path : candidates) {
    handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle) break;
    tried += "\n  " + path.string() + ": " + dlerror();
  }
  if (!handle) {
    throw RendezvousFailed(
        std::string("--rdzv-backend c10d needs ") + kC10dRendezvousModule +
        " (it holds the LibTorch part of ddprun), and it could not be loaded. Tried:" + tried +
        "\n---> HINT: install it beside ddprun (cmake --install puts it in lib/), or use "
        "--rdzv-backend static with --node-rank and --master-addr.");
  }
  // Loaded for the life of the process: the backend's threads run until exit.
  const auto create =
      reinterpret_cast<CreateC10dRendezvousFn>(dlsym(handle, kC10dRendezvousEntryPoint));
  if (!create) {
    throw RendezvousFailed(std::string(kC10dRendezvousModule) + " has no " +
                           kC10dRendezvousEntryPoint +
                           ": it is not ddprun's module, or of another version.");
  }
  std::string message;
  std::unique_ptr<NodeRendezvous> rendezvous(create(config, message));
  if (!rendezvous) throw RendezvousFailed(message);
  return rendezvous;
}

}  // namespace ddp::launcher
