// One rank of the multi-process tests (distributed_test.cpp starts N of these, directly,
// under mpirun, or beside a Python peer): ddp::init() from the environment, then every
// collective is checked value by value. Exit 0 = every value as expected; an init
// error exits with ddp::exitCodeFor(). argv[1]: the backend (default auto).
// argv[2] = blocked_collective_error: rank 0 starts an allreduce that rank 1 never joins
// (rank 1 stays alive, as a rank stuck on a dead third one), then fails while it is in
// flight; it must leave at once (Note [Leaving a failed group]), exit 200.
#include <chrono>
#include <iostream>
#include <string>
#include <thread>

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "runtime/distributed.h"

namespace {

int failures = 0;

void expectEqual(const std::string& what, const torch::Tensor& got, const torch::Tensor& want,
                 int rank) {
  if (!torch::equal(got, want)) {
    ++failures;
    std::cerr << "rank " << rank << ": " << what << " MISMATCH\n got:  " << got
              << "\n want: " << want << std::endl;
  }
}

int failWithABlockedCollective(const ddp::InitOptions& options) {
  try {
    auto d = ddp::init(options);
    if (d.rank() != 0) {
      std::this_thread::sleep_for(std::chrono::seconds(60));  // alive, never joins
      return 0;
    }
    std::vector<torch::Tensor> tensors{torch::ones({16})};
    auto pending = d.group->allreduce(tensors);  // a Gloo thread now waits for rank 1
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    throw ddp::TransientError("a peer was lost");
  } catch (const std::exception& e) {
    std::cerr << "rank 0 leaves: " << e.what() << std::endl;
    return ddp::exitCodeFor(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  ddp::InitOptions options;
  if (argc > 1) options.backend = argv[1];
  if (argc > 2 && std::string(argv[2]) == "blocked_collective_error") {
    return failWithABlockedCollective(options);
  }
  ddp::Distributed d;
  try {
    d = ddp::init(options);
  } catch (const std::exception& e) {
    std::cerr << "init failed: " << e.what() << std::endl;
    return ddp::exitCodeFor(e);
  }
  const int rank = d.rank();
  const int worldSize = d.worldSize();
  auto& group = d.group;
  if (group->getRank() != rank || group->getSize() != worldSize) {
    std::cerr << "group reports rank " << group->getRank() << "/" << group->getSize() << "\n";
    return 1;
  }
  // Note [Waiting for the other ranks]: Gloo formed within the rendezvous timeout, and its
  // collectives have the collective timeout.
  if (d.backend == ddp::comm::Backend::kGloo) {
    const auto timeout = group->getBackend(c10::DeviceType::CPU)->getBackendOptions()->timeout;
    std::cout << "rank " << rank << " collective_timeout_ms=" << timeout.count() << std::endl;
  }

  // allreduce(sum): rank r contributes r+1 in every element -> n(n+1)/2 everywhere.
  {
    std::vector<torch::Tensor> tensors{torch::full({1000}, rank + 1, torch::kFloat32)};
    group->allreduce(tensors)->wait();
    expectEqual("allreduce sum float32", tensors[0],
                torch::full({1000}, worldSize * (worldSize + 1) / 2, torch::kFloat32), rank);
  }
  // allreduce(max) on int64, values differing per element and rank.
  {
    auto mine = torch::arange(64, torch::kInt64) * (rank + 1);
    std::vector<torch::Tensor> tensors{mine.clone()};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    group->allreduce(tensors, options)->wait();
    expectEqual("allreduce max int64", tensors[0], torch::arange(64, torch::kInt64) * worldSize,
                rank);
  }
  // broadcast from the last rank (not 0, so the root really travels).
  {
    const int root = worldSize - 1;
    std::vector<torch::Tensor> tensors{torch::arange(100, torch::kFloat64) * (rank + 1)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group->broadcast(tensors, options)->wait();
    expectEqual("broadcast from " + std::to_string(root), tensors[0],
                torch::arange(100, torch::kFloat64) * (root + 1), rank);
  }
  // allgather: slot r holds rank r's tensor [r, 10r, 100r].
  {
    std::vector<torch::Tensor> input{torch::tensor({rank, 10 * rank, 100 * rank}, torch::kInt32)};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int r = 0; r < worldSize; ++r) output[0].push_back(torch::empty({3}, torch::kInt32));
    group->allgather(output, input)->wait();
    for (int r = 0; r < worldSize; ++r) {
      expectEqual("allgather slot " + std::to_string(r), output[0][r],
                  torch::tensor({r, 10 * r, 100 * r}, torch::kInt32), rank);
    }
  }
  group->barrier()->wait();
  if (failures) return 1;
  std::cout << "rank " << rank << "/" << worldSize
            << " source=" << ddp::env::sourceName(d.env.source) << " master=" << d.env.masterAddr
            << ": all collectives verified" << std::endl;
  return 0;
}
