// DistributedDataParallel for LibTorch modules, on c10d's own Reducer: the engine behind
// PyTorch's Python DDP, driven from C++ the way torch/nn/parallel/distributed.py drives it.
//
// Note [How a step flows]
// - Construction: parameter shapes are checked across ranks, then parameters and
//   buffers are broadcast from rank 0. The Reducer registers a hook on each parameter's
//   gradient accumulator.
// - forward(): on the first iteration that trains, after the first, the buckets are
//   rebuilt in the order gradients became ready (so they fill in backward order);
//   buffers are broadcast from rank 0 (broadcastBuffers); the module runs; the Reducer
//   is told a backward is coming (and, in findUnusedParameters mode, which parameters
//   the output cannot reach).
// - backward(): as each gradient is accumulated its hook marks it ready; a bucket whose
//   gradients are all ready is averaged over the ranks at once (allreduce, or the
//   compression hook), while autograd continues with the earlier layers. At the end of
//   backward the engine runs the Reducer's callback, which waits for the buckets and
//   writes the averaged values into .grad.
// - noSync(): while the guard lives, forward() does not arm the Reducer, so backward
//   only accumulates locally; the next synced backward averages the sum.
// Buckets hold at most bucketCapBytes (25 MiB), the first at most bucketCapFirstBytes
// (1 MiB), exactly as in PyTorch.
//
// Note [Small buckets travel as one allgather]
// Gloo's ring allreduce cuts a tensor into two segments per rank and passes them in
// 2(n-1) rounds of messages; each message is a hand-off between threads on both sides,
// and for a small bucket those hand-offs are the whole cost (mlp_small's 104 KB bucket:
// 1.45 ms as an allreduce, 0.80 ms as an allgather, benchmarks/ddp). So a CPU bucket
// whose copies from all ranks fit in allgatherBucketsUpToBytes is scaled by 1/n as PyTorch
// scales it, gathered from every rank in n-1 rounds, and summed locally in rank order: each
// rank adds the same numbers in the same order, so all hold bitwise the same average (and,
// for n = 2, bitwise PyTorch's). The allgather moves n/2 times the bytes of the ring, hence
// the cap. Larger buckets take the ring allreduce, as in PyTorch, but without PyTorch's
// fusing of the scaling into the copy into the bucket: one more pass over them (about
// 4 ms per 100 MB here). So the hook is installed only when the buckets expected after
// the rebuild include a small one (expectSmallBucket in the .cpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
// Complete, not declared: the template below moves intrusive_ptr<ProcessGroup> in the
// user's code, which may include nothing else of c10d.
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace c10d {
class Reducer;
class Logger;
class CommHookInterface;
}  // namespace c10d

namespace ddp {

// c10d's defaults (kDefaultBucketBytesCap, kDefaultFirstBucketBytes), i.e. PyTorch's.
constexpr std::int64_t kDefaultBucketCapBytes = 25 * 1024 * 1024;
constexpr std::int64_t kDefaultBucketCapFirstBytes = 1024 * 1024;
// See Note [Small buckets travel as one allgather].
constexpr std::int64_t kDefaultAllgatherBucketsUpToBytes = 2 * 1024 * 1024;

enum class GradCompression { kNone, kFp16, kBf16 };

struct DdpOptions {
  std::int64_t bucketCapBytes = kDefaultBucketCapBytes;
  std::int64_t bucketCapFirstBytes = kDefaultBucketCapFirstBytes;
  // Parameters that get no gradient in some iterations (e.g. a branch not taken) are
  // then marked ready by the Reducer itself. Off: such a parameter is an error that
  // names it at the next iteration (never a hang).
  bool findUnusedParameters = false;
  // Broadcast buffers (e.g. BatchNorm running stats) from rank 0 before each forward.
  bool broadcastBuffers = true;
  // .grad becomes a view into the bucket: saves one copy and the memory of the grads.
  bool gradientAsBucketView = false;
  // Average gradients in fp16/bf16 (half the bytes on the wire), then cast back.
  GradCompression compression = GradCompression::kNone;
  // CPU buckets whose copies from all ranks (n x bucket bytes) fit in this are averaged by
  // one allgather and a local sum; 0: always the ring allreduce, as PyTorch. See Note
  // [Small buckets travel as one allgather].
  std::int64_t allgatherBucketsUpToBytes = kDefaultAllgatherBucketsUpToBytes;
};

// The non-template part: owns the Reducer; DistributedDataParallel<M> forwards to it.
class DdpEngine {
 public:
  DdpEngine(torch::nn::Module& module, c10::intrusive_ptr<c10d::ProcessGroup> group,
            const DdpOptions& options);
  ~DdpEngine();
  DdpEngine(const DdpEngine&) = delete;
  DdpEngine& operator=(const DdpEngine&) = delete;

  void beforeForward();
  void afterForward(const std::vector<at::Tensor>& outputs);
  // Replaces the built-in averaging (e.g. to observe or compress buckets). Must be
  // called before the first forward.
  void registerCommHook(std::unique_ptr<c10d::CommHookInterface> hook);

  // Zeroes every parameter's .grad in place. With gradientAsBucketView the grads are
  // views into the buckets and must stay so: use this instead of the optimizer's
  // zero_grad(), which detach_()es them (a view refuses, with an error).
  void zeroGrad();

  // Whether small buckets are averaged by allgather (Note [Small buckets travel as one
  // allgather]); decided at the first training forward.
  bool averagesSmallBucketsByAllgather() const { return allgatherHookInstalled_; }
  bool syncEnabled() const { return syncEnabled_; }
  void setSyncEnabled(bool enabled) { syncEnabled_ = enabled; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& group() const { return group_; }

 private:
  torch::nn::Module& module_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  DdpOptions options_;
  std::vector<at::Tensor> params_;  // those that require grad, in registration order
  std::vector<std::string> paramNames_;
  // Which parameters the last synced backward reached (set by a hook on each), so that
  // an unused-parameter error can name the others. Hook handles, to remove them.
  std::unique_ptr<std::atomic<bool>[]> reached_;
  std::vector<unsigned> reachedHooks_;
  std::vector<at::Tensor> buffers_;
  // Shared: c10d's Logger holds the Reducer, and the Reducer needs a Logger (it reports
  // to it while searching for unused parameters).
  std::shared_ptr<c10d::Reducer> reducer_;
  std::shared_ptr<c10d::Logger> logger_;
  bool syncEnabled_ = true;
  // A comm hook is in place (the compression hook or one the user registered); else the
  // first training forward installs the averaging hook of Note [Small buckets travel as
  // one allgather].
  bool commHookRegistered_ = false;
  // Some bucket is expected to fit allgatherBucketsUpToBytes (CPU parameters only).
  bool expectSmallBucket_ = false;
  bool allgatherHookInstalled_ = false;

  // Runs a Reducer call; the Reducer's "did not finish reduction" error is re-thrown
  // naming the parameters that got no gradient.
  template <typename Call>
  void guardUnused(Call&& call);
};

// Wraps a module (ModuleHolder or shared_ptr) once; then forward / backward / step as
// usual. See Note [How a step flows].
template <typename ModuleHolder>
class DistributedDataParallel {
 public:
  DistributedDataParallel(ModuleHolder module, c10::intrusive_ptr<c10d::ProcessGroup> group,
                          const DdpOptions& options = {})
      : module_(std::move(module)), engine_(*module_, std::move(group), options) {}

  template <typename... Args>
  auto forward(Args&&... args) {
    engine_.beforeForward();
    auto output = module_->forward(std::forward<Args>(args)...);
    if constexpr (std::is_same_v<std::decay_t<decltype(output)>, at::Tensor>) {
      engine_.afterForward({output});
    } else {
      engine_.afterForward({});
    }
    return output;
  }

  // Gradient accumulation: backward inside the guard's scope does not communicate.
  class NoSyncGuard {
   public:
    explicit NoSyncGuard(DdpEngine& engine) : engine_(engine), previous_(engine.syncEnabled()) {
      engine_.setSyncEnabled(false);
    }
    ~NoSyncGuard() { engine_.setSyncEnabled(previous_); }
    NoSyncGuard(const NoSyncGuard&) = delete;
    NoSyncGuard& operator=(const NoSyncGuard&) = delete;

   private:
    DdpEngine& engine_;
    bool previous_;
  };
  [[nodiscard]] NoSyncGuard noSync() { return NoSyncGuard(engine_); }

  void zeroGrad() { engine_.zeroGrad(); }
  ModuleHolder& module() { return module_; }
  DdpEngine& engine() { return engine_; }

 private:
  ModuleHolder module_;
  DdpEngine engine_;
};

}  // namespace ddp
