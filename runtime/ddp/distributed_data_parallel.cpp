#include "runtime/ddp/distributed_data_parallel.h"

#include <algorithm>
#include <limits>
#include <unordered_map>

#include <torch/torch.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "runtime/log/logging.h"

namespace ddp {
namespace {

// torch.distributed.utils._sync_module_states broadcasts in chunks of this size.
constexpr std::size_t kBroadcastBucketBytes = 250 * 1024 * 1024;

// Note [A hook's continuation rethrows]: Future::then runs its callback also when the
// collective failed (a peer died); the callback must rethrow that error with value(), or
// the bucket is completed with whatever the unfinished collective left in its buffers
// and the step goes on with garbage gradients (seen as "non-finite gradients", exit 3,
// when one pod of a job was killed) instead of failing as a lost peer (exit 200).

// Averages a bucket in a narrower float type: cast, pre-divide (keeps the sum in range),
// allreduce, cast back into the bucket. c10d's FP16CompressCommHook does the same for
// fp16; one class serves both types here.
class CompressCommHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  CompressCommHook(c10::intrusive_ptr<c10d::ProcessGroup> group, at::ScalarType wireType)
      : CppCommHookInterface(std::move(group)), wireType_(wireType) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    at::Tensor& buffer = bucket.getBufferRef();
    auto compressed = buffer.to(wireType_).div_(state_->getSize());
    std::vector<at::Tensor> tensors{compressed};
    auto future = state_->allreduce(tensors)->getFuture();
    return future->then(
        [buffer, compressed](c10::ivalue::Future& allreduced) {
          allreduced.value();  // Note [A hook's continuation rethrows]
          buffer.copy_(compressed);
          return c10::IValue(buffer);
        },
        future->elementType());
  }

 private:
  at::ScalarType wireType_;
};

// The default averaging when no other hook is registered: see Note [Small buckets travel
// as one allgather].
class AverageCommHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  AverageCommHook(c10::intrusive_ptr<c10d::ProcessGroup> group, std::int64_t maxGatheredBytes)
      : CppCommHookInterface(std::move(group)), maxGatheredBytes_(maxGatheredBytes) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    at::Tensor buffer = bucket.getBufferRef();
    const int n = state_->getSize();
    // As the Reducer scales a gradient on its way into the bucket without a hook.
    buffer.mul_(1.0 / n);
    const auto gatheredBytes = static_cast<std::int64_t>(buffer.numel()) *
                               static_cast<std::int64_t>(buffer.element_size()) * n;
    if (gatheredBytes > maxGatheredBytes_) {
      std::vector<at::Tensor> tensors{buffer};
      return state_->allreduce(tensors)->getFuture();
    }
    at::Tensor gathered = at::empty({n, buffer.numel()}, buffer.options());
    at::Tensor gatheredFlat = gathered.view({-1});
    // torch 2.15 renamed _allgather_base all_gather_single (the old name deprecated there);
    // the versions before have only the old name (tests/build/torch_compat_test.sh).
#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 15
    auto future = state_->_allgather_base(gatheredFlat, buffer)->getFuture();
#else
    auto future = state_->all_gather_single(gatheredFlat, buffer)->getFuture();
#endif
    return future->then(
        [buffer, gathered, n](c10::ivalue::Future& allgathered) {
          allgathered.value();  // Note [A hook's continuation rethrows]
          buffer.copy_(gathered[0]);
          for (int rank = 1; rank < n; ++rank) buffer.add_(gathered[rank]);
          return c10::IValue(std::vector<at::Tensor>{buffer});
        },
        c10::getTypePtr<std::vector<at::Tensor>>());
  }

 private:
  std::int64_t maxGatheredBytes_;
};

// Whether the buckets the Reducer will rebuild (the observed gradient order is about the
// reverse of registration) include one small enough for the allgather. Without one, the
// hook would only cost its extra pass (Note [Small buckets travel as one allgather]).
bool expectSmallBucket(const std::vector<at::Tensor>& params, const DdpOptions& options,
                       int worldSize) {
  std::vector<int64_t> backwardOrder(params.size());
  for (size_t i = 0; i < params.size(); ++i) backwardOrder[i] = params.size() - 1 - i;
  auto [buckets, limits] =
      c10d::compute_bucket_assignment_by_size(params,
                                              {static_cast<size_t>(options.bucketCapFirstBytes),
                                               static_cast<size_t>(options.bucketCapBytes)},
                                              {}, backwardOrder);
  for (const auto& bucket : buckets) {
    std::int64_t bytes = 0;
    for (auto index : bucket) bytes += params[index].numel() * params[index].element_size();
    if (bytes * worldSize <= options.allgatherBucketsUpToBytes) return true;
  }
  return false;
}

}  // namespace

DdpEngine::DdpEngine(torch::nn::Module& module, c10::intrusive_ptr<c10d::ProcessGroup> group,
                     const DdpOptions& options)
    : module_(module), group_(std::move(group)), options_(options) {
  TORCH_CHECK(options.bucketCapBytes > 0 && options.bucketCapFirstBytes > 0,
              "bucket caps must be positive, got bucketCapBytes=", options.bucketCapBytes,
              " bucketCapFirstBytes=", options.bucketCapFirstBytes);
  TORCH_CHECK(options.allgatherBucketsUpToBytes >= 0,
              "allgatherBucketsUpToBytes must be >= 0 (0 turns the allgather off), got ",
              options.allgatherBucketsUpToBytes);
  std::vector<at::Tensor> params;
  std::unordered_map<size_t, std::string> names;
  for (const auto& item : module_.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    names[params.size()] = item.key();
    params.push_back(item.value());
    paramNames_.push_back(item.key());
  }
  params_ = params;
  reached_ = std::make_unique<std::atomic<bool>[]>(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    reached_[i] = true;
    reachedHooks_.push_back(params_[i].register_hook(
        [this, i](const at::Tensor&) { reached_[i].store(true, std::memory_order_relaxed); }));
  }
  TORCH_CHECK(!params.empty(),
              "DistributedDataParallel: the module has no parameter that "
              "requires a gradient; there is nothing to synchronize.");
  for (const auto& buffer : module_.buffers(/*recurse=*/true)) buffers_.push_back(buffer);

  // Same model everywhere: shapes checked (a clear error naming the mismatch), then
  // rank 0's values for parameters and buffers.
  c10d::verify_params_across_processes(group_, params, std::nullopt);
  {
    torch::NoGradGuard noGrad;
    std::vector<at::Tensor> states;
    for (auto& p : params) states.push_back(p.detach());
    for (auto& b : buffers_) states.push_back(b.detach());
    c10d::broadcast_coalesced(group_, states, kBroadcastBucketBytes, 0);
  }

  // As torch/nn/parallel/distributed.py (_BucketCapacityConfig): without unused-parameter
  // search the first iteration uses one bucket (parameter order may not be execution
  // order), and the Reducer rebuilds buckets from the observed gradient order.
  std::vector<size_t> limits;
  if (!options.findUnusedParameters) {
    limits = {std::numeric_limits<size_t>::max()};
  } else if (options.bucketCapFirstBytes < options.bucketCapBytes) {
    limits = {static_cast<size_t>(options.bucketCapFirstBytes),
              static_cast<size_t>(options.bucketCapBytes)};
  } else {
    limits = {static_cast<size_t>(options.bucketCapBytes)};
  }
  auto [bucketIndices, perBucketLimits] =
      c10d::compute_bucket_assignment_by_size(params, limits, {});
  expectSmallBucket_ = options.allgatherBucketsUpToBytes > 0 && params.front().device().is_cpu() &&
                       expectSmallBucket(params, options, group_->getSize());
  // Reverse: gradients arrive roughly in reverse registration order.
  std::reverse(bucketIndices.begin(), bucketIndices.end());
  reducer_ = std::make_shared<c10d::Reducer>(
      params, std::move(bucketIndices), group_,
      /*expect_sparse_gradients=*/std::vector<bool>(params.size(), false), options.bucketCapBytes,
      options.findUnusedParameters, options.gradientAsBucketView, std::move(names),
      options.bucketCapFirstBytes,
      /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
      /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
  logger_ = std::make_shared<c10d::Logger>(reducer_);
  reducer_->set_logger(logger_);
  logger_->set_construction_data_and_log("ddprun", /*device_ids=*/{}, /*output_device=*/-1,
                                         options.broadcastBuffers, /*has_sync_bn=*/false,
                                         /*static_graph=*/false);
  if (options.compression != GradCompression::kNone) {
    registerCommHook(std::make_unique<CompressCommHook>(
        group_, options.compression == GradCompression::kFp16 ? at::kHalf : at::kBFloat16));
  }
  log::atLevel(log::infoOnRankZero(group_->getRank()), "ddp",
               "event=ddp_ready params={} buffers={} bucket_cap_bytes={} "
               "bucket_cap_first_bytes={} allgather_buckets_up_to_bytes={} "
               "find_unused_parameters={} compression={}",
               params.size(), buffers_.size(), options.bucketCapBytes, options.bucketCapFirstBytes,
               options.allgatherBucketsUpToBytes, options.findUnusedParameters,
               options.compression == GradCompression::kNone   ? "none"
               : options.compression == GradCompression::kFp16 ? "fp16"
                                                               : "bf16");
}

DdpEngine::~DdpEngine() {
  for (size_t i = 0; i < params_.size(); ++i) params_[i].remove_hook(reachedHooks_[i]);
}

void DdpEngine::zeroGrad() {
  torch::NoGradGuard noGrad;
  for (auto& p : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

void DdpEngine::registerCommHook(std::unique_ptr<c10d::CommHookInterface> hook) {
  reducer_->register_comm_hook(std::move(hook));
  commHookRegistered_ = true;
}

template <typename Call>
void DdpEngine::guardUnused(Call&& call) {
  try {
    call();
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (message.find("Expected to have finished reduction") == std::string::npos) throw;
    std::string names;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!reached_[i].load()) names += (names.empty() ? "" : ", ") + paramNames_[i];
    }
    TORCH_CHECK(false, "DistributedDataParallel: on rank ", group_->getRank(),
                " parameters got no gradient in the previous iteration, so their buckets "
                "were never reduced: ",
                names,
                ". ---> HINT: make every parameter take part in the loss, or set "
                "DdpOptions::findUnusedParameters = true (PyTorch: find_unused_parameters).");
  }
}

void DdpEngine::beforeForward() {
  const bool training = torch::GradMode::is_enabled();
  // Last chance before the first backward, after the user had theirs.
  if (training && !commHookRegistered_ && expectSmallBucket_) {
    registerCommHook(std::make_unique<AverageCommHook>(group_, options_.allgatherBucketsUpToBytes));
    allgatherHookInstalled_ = true;
    log::debug("ddp", "event=allgather_small_buckets up_to_bytes={}",
               options_.allgatherBucketsUpToBytes);
  }
  if (training && syncEnabled_) guardUnused([&] { reducer_->prepare_for_forward(); });
  // Before the forward's activations take memory: rebuilding may allocate new buckets
  // before freeing the old ones (PyTorch does the same). A collective on all ranks; it
  // happens once, after the first trained iteration.
  if (training) {
    guardUnused([&] {
      if (reducer_->rebuild_buckets()) log::debug("ddp", "event=buckets_rebuilt");
    });
  }
  if (options_.broadcastBuffers && !buffers_.empty()) {
    torch::NoGradGuard noGrad;
    std::vector<at::Tensor> states;
    for (auto& b : buffers_) states.push_back(b.detach());
    c10d::broadcast_coalesced(group_, states, kBroadcastBucketBytes, 0);
  }
}

void DdpEngine::afterForward(const std::vector<at::Tensor>& outputs) {
  if (!torch::GradMode::is_enabled() || !syncEnabled_) return;
  for (size_t i = 0; i < params_.size(); ++i) reached_[i].store(false, std::memory_order_relaxed);
  if (options_.findUnusedParameters) {
    TORCH_CHECK(!outputs.empty(),
                "findUnusedParameters needs the forward's output tensor(s) "
                "to see which parameters it cannot reach.");
    guardUnused([&] { reducer_->prepare_for_backward(outputs); });
  } else {
    guardUnused([&] { reducer_->prepare_for_backward({}); });
  }
}

}  // namespace ddp
