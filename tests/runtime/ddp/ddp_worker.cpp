// One rank of the DDP tests (distributed_data_parallel_test.cpp starts N of these).
//   ddp_worker MODEL MODE [OUT_FILE]
// Each rank trains MODEL through ddp::DistributedDataParallel on its slice of every
// global batch and, beside it, a single-process reference on the whole global batch
// from the same initial weights; after kSteps optimizer steps it prints the largest
// parameter difference and exits 0 when it is within tolerance.
// MODEs: plain | nosync (2 micro-batches, the first under noSync) | fp16 | bf16 |
//        grad_view (gradientAsBucketView, grads zeroed with DistributedDataParallel::zeroGrad) |
//        find_unused (a branch unused on odd steps) | unused_error (same, mode off: the
//        error must name the parameter) | overlap (a bucket is launched before the
//        last gradient exists) | pyref (formula weights and data, shared with
//        python_ddp_reference.py; rank 0 writes the parameters to OUT_FILE) |
//        peer_exits, peer_exits_fp16 (every rank but 0 exits once DDP is set up; rank 0's
//        backward must fail, not average what the dead peer never sent)
// DDP_WORKER_BACKEND (gloo) and DDP_WORKER_DEVICE (auto) choose the group and where the
// models and batches live (tests/gpu: CUDA tensors under Gloo or NCCL); on CUDA the
// reference runs on the same device, with TF32 off and a looser tolerance (kernels may
// sum in another order for a rank's batch than for the global one).
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>

#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include "models/model_zoo.h"
#include "runtime/ddp/distributed_data_parallel.h"
#include "runtime/distributed.h"

namespace {

constexpr int kSteps = 6;
constexpr std::int64_t kBatchPerRank = 8;
namespace F = torch::nn::functional;

// fc1 -> relu -> (fc2a on even steps, fc2b on odd steps): fc2b gets no gradient on even
// steps and vice versa.
struct BranchyNetImpl : torch::nn::Module {
  BranchyNetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(784, 32))),
        fc2a(register_module("fc2a", torch::nn::Linear(32, 10))),
        fc2b(register_module("fc2b", torch::nn::Linear(32, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::relu(fc1(x.flatten(1)));
    return useA ? fc2a(h) : fc2b(h);
  }
  torch::nn::Linear fc1, fc2a, fc2b;
  bool useA = true;
};
TORCH_MODULE(BranchyNet);

// Deterministic values from a formula, computed by torch in float64 in both languages.
torch::Tensor formula(std::vector<std::int64_t> shape, double a, double b, double scale) {
  std::int64_t n = 1;
  for (auto s : shape) n *= s;
  return (torch::arange(n, torch::kFloat64) * a + b)
      .sin()
      .mul(scale)
      .to(torch::kFloat32)
      .view(shape);
}

double maxAbsDiff(torch::nn::Module& a, torch::nn::Module& b) {
  double worst = 0;
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  }
  return worst;
}

bool allClose(torch::nn::Module& a, torch::nn::Module& b, double rtol, double atol) {
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::allclose(pa[i], pb[i], rtol, atol)) return false;
  }
  return true;
}

// Records, in autograd order, when each parameter's gradient is produced and when each
// bucket is handed to communication (then averages it as the default hook does).
struct Timeline {
  std::mutex mutex;
  std::vector<std::string> events;
  void add(std::string event) {
    std::lock_guard<std::mutex> lock(mutex);
    events.push_back(std::move(event));
  }
};

class RecordingHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  RecordingHook(c10::intrusive_ptr<c10d::ProcessGroup> group, Timeline& timeline)
      : CppCommHookInterface(std::move(group)), timeline_(timeline) {}
  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    timeline_.add(fmt::format("launch bucket {}", bucket.getIndex()));
    std::vector<at::Tensor> tensors{bucket.getBufferRef().div_(state_->getSize())};
    return state_->allreduce(tensors)->getFuture();
  }

 private:
  Timeline& timeline_;
};

template <typename Holder>
int train(ddp::Distributed& dist, Holder model, Holder reference, const std::string& mode,
          const std::string& outFile) {
  const int rank = dist.rank(), n = dist.worldSize();
  ddp::DdpOptions options;
  if (mode == "fp16" || mode == "peer_exits_fp16")
    options.compression = ddp::GradCompression::kFp16;
  if (mode == "bf16") options.compression = ddp::GradCompression::kBf16;
  if (mode == "find_unused") options.findUnusedParameters = true;
  if (mode == "grad_view") options.gradientAsBucketView = true;
  if (mode == "ring") options.allgatherBucketsUpToBytes = 0;
  if (mode == "overlap") {
    options.bucketCapBytes = 64 * 1024;  // several buckets for a small model
    options.bucketCapFirstBytes = 16 * 1024;
  }
  model->to(dist.device);
  reference->to(dist.device);
  ddp::DistributedDataParallel<Holder> ddpModel(model, dist.group, options);
  // The reference starts from the weights DDP broadcast from rank 0.
  {
    torch::NoGradGuard noGrad;
    auto src = model->parameters(), dst = reference->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  Timeline timeline;
  if (mode == "overlap") {
    ddpModel.engine().registerCommHook(std::make_unique<RecordingHook>(dist.group, timeline));
    auto named = model->named_parameters();
    for (auto& item : named) {
      auto name = item.key();
      item.value().register_hook([&timeline, name](torch::Tensor grad) {
        timeline.add("grad " + name);
        return grad;
      });
    }
  }
  if (mode.starts_with("peer_exits")) {
    if (rank != 0) std::_Exit(0);  // as a killed rank: its sockets close
    auto x = torch::randn({kBatchPerRank, 1, 28, 28}).to(dist.device);
    F::cross_entropy(ddpModel.forward(x), torch::randint(10, {kBatchPerRank}).to(dist.device))
        .backward();
    std::cout << "backward completed without the peer: gradients were averaged with nothing"
              << std::endl;
    return 4;
  }
  const double lr = mode == "pyref" ? 0.05 : 0.1;
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(lr).momentum(0.9));
  torch::optim::SGD refOptimizer(reference->parameters(),
                                 torch::optim::SGDOptions(lr).momentum(0.9));
  const std::int64_t global = kBatchPerRank * n;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(99);
  for (int step = 0; step < kSteps; ++step) {
    if (step == kSteps - 1) {
      std::lock_guard<std::mutex> lock(timeline.mutex);
      timeline.events.clear();
    }
    torch::Tensor x, y;
    if (mode == "pyref") {
      x = formula({global, 64}, 0.11, step, 1.0);
      y = (torch::arange(global, torch::kInt64) * 7 + step) % 10;
    } else {
      x = torch::randn({global, 1, 28, 28}, generator);
      y = torch::randint(10, {global}, generator, torch::kInt64);
    }
    x = x.to(dist.device);
    y = y.to(dist.device);
    if constexpr (std::is_same_v<Holder, BranchyNet>) {
      model->useA = reference->useA = step % 2 == 0;
    }
    auto localX = x.slice(0, rank * kBatchPerRank, (rank + 1) * kBatchPerRank);
    auto localY = y.slice(0, rank * kBatchPerRank, (rank + 1) * kBatchPerRank);
    if (mode == "grad_view") {
      ddpModel.zeroGrad();  // the optimizer's zero_grad would detach_() the bucket views
    } else {
      optimizer.zero_grad();
    }
    if (mode == "nosync") {
      const auto half = kBatchPerRank / 2;
      {
        auto guard = ddpModel.noSync();
        (F::cross_entropy(ddpModel.forward(localX.slice(0, 0, half)), localY.slice(0, 0, half)) / 2)
            .backward();
      }
      (F::cross_entropy(ddpModel.forward(localX.slice(0, half)), localY.slice(0, half)) / 2)
          .backward();
    } else {
      F::cross_entropy(ddpModel.forward(localX), localY).backward();
    }
    optimizer.step();
    refOptimizer.zero_grad();
    F::cross_entropy(reference->forward(x), y).backward();
    refOptimizer.step();
  }
  const double diff = maxAbsDiff(*model, *reference);
  const bool compressed = mode == "fp16" || mode == "bf16";
  const bool cuda = dist.device.is_cuda();
  const double atol = compressed ? (mode == "fp16" ? 2e-3 : 2e-2) : (cuda ? 1e-5 : 1e-6);
  const bool ok = allClose(*model, *reference, compressed ? 0 : (cuda ? 1e-4 : 1e-5), atol);
  std::cout << fmt::format(
                   "rank {}/{} mode={} device={} steps={} allgather_small_buckets={} "
                   "max_abs_diff={:.3e} {}",
                   rank, n, mode, dist.device.str(), kSteps,
                   ddpModel.engine().averagesSmallBucketsByAllgather() ? "yes" : "no", diff,
                   ok ? "within tolerance" : "OUT OF TOLERANCE")
            << std::endl;
  if (mode == "overlap") {
    // The last step's events (its buckets were rebuilt after the first step).
    int firstLaunch = -1, lastGrad = -1;
    std::cout << "last step:";
    for (int i = 0; i < static_cast<int>(timeline.events.size()); ++i) {
      const auto& event = timeline.events[i];
      if (event.rfind("launch", 0) == 0 && firstLaunch < 0) firstLaunch = i;
      if (event.rfind("grad", 0) == 0) lastGrad = i;
      std::cout << " [" << event << "]";
    }
    std::cout << std::endl;
    const bool overlapped = firstLaunch >= 0 && firstLaunch < lastGrad;
    std::cout << "first bucket launched before the last gradient: " << (overlapped ? "yes" : "no")
              << std::endl;
    if (!overlapped) return 1;
  }
  if (mode == "pyref" && rank == 0) {
    std::ofstream out(outFile, std::ios::binary);
    for (auto& p : model->parameters()) {
      auto flat = p.detach().contiguous();
      out.write(reinterpret_cast<const char*>(flat.template data_ptr<float>()), flat.numel() * 4);
    }
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: ddp_worker MODEL MODE [OUT_FILE]\n";
    return 2;
  }
  const std::string modelName = argv[1], mode = argv[2], outFile = argc > 3 ? argv[3] : "";
  const char* backend = std::getenv("DDP_WORKER_BACKEND");
  const char* device = std::getenv("DDP_WORKER_DEVICE");
  auto dist =
      ddp::init({.backend = backend ? backend : "gloo", .device = device ? device : "auto"});
  if (dist.device.is_cuda()) {
    // fp32 on both sides: TF32 convolutions would differ by ~1e-3 between the batch sizes.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
  torch::manual_seed(1234 + dist.rank());  // different on purpose: DDP must broadcast rank 0's
  try {
    if (mode == "find_unused" || mode == "unused_error") {
      return train(dist, BranchyNet(), BranchyNet(), mode, outFile);
    }
    if (mode == "pyref") {
      // 64-128-128-10 with formula weights, identical to python_ddp_reference.py.
      auto make = [] {
        auto m = torch::nn::Sequential(torch::nn::Linear(64, 128), torch::nn::ReLU(),
                                       torch::nn::Linear(128, 128), torch::nn::ReLU(),
                                       torch::nn::Linear(128, 10));
        torch::NoGradGuard noGrad;
        int j = 0;
        for (auto& p : m->parameters()) {
          auto shape = p.sizes().vec();
          p.copy_(formula(shape, 0.37, 1.3 * j++, 0.1));
        }
        return m;
      };
      return train(dist, make(), make(), mode, outFile);
    }
    ddp::models::InputShape shape;
    return train(dist, ddp::models::createModel(modelName, shape, 10),
                 ddp::models::createModel(modelName, shape, 10), mode, outFile);
  } catch (const c10::Error& e) {
    std::cerr << "rank " << dist.rank() << " error: " << e.what_without_backtrace() << std::endl;
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "rank " << dist.rank() << " error: " << e.what() << std::endl;
    return 3;
  }
}
