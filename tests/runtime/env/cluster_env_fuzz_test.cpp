// resolveClusterEnv under random environments (tests/support/fuzz.h): every environment
// resolves or is refused with an EnvError, and what resolves describes a process that
// can exist (Note [Environment precedence]).
#include "runtime/env/cluster_env.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/support/env_corpus.h"
#include "tests/support/fuzz.h"

namespace ddp::env {
namespace {

namespace fuzz = ddp::testing::fuzz;

TEST(ClusterEnvFuzzTest, EveryEnvironmentResolvesOrIsAnEnvError) {
  fuzz::Target target{"cluster_env", fuzz::environmentCorpus(), fuzz::environmentDictionary()};
  target.parse = [](const std::string& input) {
    const ClusterEnv resolved = resolveClusterEnv(fuzz::environmentOf(input));
    const bool mpi = resolved.source == EnvSource::kOpenMpi || resolved.source == EnvSource::kPmi;
    if (!(0 <= resolved.rank && resolved.rank < resolved.worldSize) ||
        !(0 <= resolved.localRank && resolved.localRank < resolved.localWorldSize) ||
        resolved.localWorldSize > resolved.worldSize || (resolved.masterAddr.empty() && !mpi)) {
      throw std::logic_error("accepted an impossible process: " + describe(resolved));
    }
  };
  fuzz::runAndExpectNoFindings(target, 20000);
}

}  // namespace
}  // namespace ddp::env
