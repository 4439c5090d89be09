// resolveNodeEnv under random environments and flag sets (tests/support/fuzz.h): every
// environment resolves or is refused with an EnvError, and what resolves is a node that
// can exist.
#include "runtime/env/node_env.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "tests/support/env_corpus.h"
#include "tests/support/fuzz.h"

namespace ddp::env {
namespace {

namespace fuzz = ddp::testing::fuzz;

TEST(NodeEnvFuzzTest, EveryEnvironmentResolvesOrIsAnEnvError) {
  fuzz::Target target{"node_env", fuzz::environmentCorpus(), fuzz::environmentDictionary()};
  target.parse = [](const std::string& input) {
    // Which launcher flags were given: five bits of the input's length, so that every
    // combination comes up.
    const std::size_t bits = input.size();
    const NodeFlags given{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0,
                          (bits & 16) != 0};
    const NodeEnv node = resolveNodeEnv(fuzz::environmentOf(input), given);
    if (node.nnodes < 1 || node.nodeRank < 0 || (node.masterPort && *node.masterPort == 0)) {
      throw std::logic_error("accepted an impossible node: nnodes=" + std::to_string(node.nnodes) +
                             " nodeRank=" + std::to_string(node.nodeRank));
    }
  };
  fuzz::runAndExpectNoFindings(target, 20000);
}

}  // namespace
}  // namespace ddp::env
