// --rdzv-conf and --rdzv-endpoint as torchrun writes them.
#include "launcher/node_rendezvous.h"

#include <gtest/gtest.h>

#include "launcher/launch_plan.h"

namespace ddp::launcher {
namespace {

using namespace std::chrono_literals;

TEST(RendezvousConf, ReadsTorchrunsKeys) {
  RendezvousConfig c;
  const auto warnings = parseRendezvousConf(
      "join_timeout=60,last_call_timeout=5,close_timeout=10,read_timeout=0.5,is_host=true,"
      "keep_alive_interval=2,keep_alive_max_attempt=4",
      "--rdzv-conf", c);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(c.joinTimeout, 60s);
  EXPECT_EQ(c.lastCallTimeout, 5s);
  EXPECT_EQ(c.closeTimeout, 10s);
  EXPECT_EQ(c.readTimeout, 500ms);
  EXPECT_EQ(c.isHost, true);
  EXPECT_EQ(c.keepAliveInterval, 2s);
  EXPECT_EQ(c.keepAliveMaxAttempt, 4);
}

TEST(RendezvousConf, DefaultsAreTorchrunsAndIsHostIsUnset) {
  RendezvousConfig c;
  EXPECT_TRUE(parseRendezvousConf("", "PET_RDZV_CONF", c).empty());
  EXPECT_EQ(c.joinTimeout, 600s);
  EXPECT_EQ(c.lastCallTimeout, 30s);
  EXPECT_EQ(c.closeTimeout, 30s);
  EXPECT_EQ(c.readTimeout, 60s);
  EXPECT_FALSE(c.isHost.has_value());
  parseRendezvousConf("is_host=0", "PET_RDZV_CONF", c);
  EXPECT_EQ(c.isHost, false);
}

TEST(RendezvousConf, TorchrunKeysWithoutMeaningHereAreWarnedAbout) {
  RendezvousConfig c;
  const auto warnings = parseRendezvousConf("timeout=900,store_type=tcp", "PET_RDZV_CONF", c);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0],
            "PET_RDZV_CONF: timeout is a torchrun key that ddprun's c10d rendezvous does not "
            "use; ignored");
}

TEST(RendezvousConf, BadInputIsRefusedWithTheKey) {
  struct Row {
    std::string conf;
    std::string inMessage;
  };
  for (const auto& row : std::vector<Row>{
           {"join_timout=5", "the unknown key 'join_timout'"},
           {"join_timeout", "'join_timeout' without a key=value"},
           {"last_call_timeout=-1", "last_call_timeout"},
           {"is_host=maybe", "is_host=true or is_host=false"},
           {"keep_alive_max_attempt=0", "keep_alive_max_attempt"},
       }) {
    RendezvousConfig c;
    try {
      parseRendezvousConf(row.conf, "--rdzv-conf", c);
      ADD_FAILURE() << row.conf << " was accepted";
    } catch (const LaunchError& e) {
      EXPECT_NE(std::string(e.what()).find(row.inMessage), std::string::npos)
          << row.conf << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("--rdzv-conf"), std::string::npos) << e.what();
    }
  }
}

TEST(RendezvousEndpoint, HostPortHostAloneAndIpv6) {
  RendezvousConfig c;
  parseRendezvousEndpoint("node0:1234", "--rdzv-endpoint", c);
  EXPECT_EQ(c.endpointHost, "node0");
  EXPECT_EQ(c.endpointPort, 1234);
  RendezvousConfig d;
  parseRendezvousEndpoint("job-worker-0", "PET_RDZV_ENDPOINT", d);
  EXPECT_EQ(d.endpointHost, "job-worker-0");
  EXPECT_EQ(d.endpointPort, kDefaultRendezvousPort);
  RendezvousConfig e;
  parseRendezvousEndpoint("[fd00::1]:29500", "--rdzv-endpoint", e);
  EXPECT_EQ(e.endpointHost, "fd00::1");
  EXPECT_EQ(e.endpointPort, 29500);
  for (const std::string bad : {":29400", "node0:http", "node0:70000", "[fd00::1", "fe80::1"}) {
    RendezvousConfig f;
    EXPECT_THROW(parseRendezvousEndpoint(bad, "--rdzv-endpoint", f), LaunchError) << bad;
  }
}

}  // namespace
}  // namespace ddp::launcher
