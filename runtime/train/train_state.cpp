#include "runtime/train/train_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "runtime/log/logging.h"
#include "runtime/train/checkpointer.h"

namespace ddp::train {
namespace {

using GenericDict = c10::impl::GenericDict;
GenericDict stringDict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

// Optimizer state as PyTorch's state_dict() shapes it: {"state": {index: {...}},
// "param_groups": [{...}]}, indices in parameter order.
GenericDict optimizerStateDict(torch::optim::Optimizer& optimizer, const OptimizerOptions& o) {
  GenericDict state(c10::IntType::get(), c10::AnyType::get());
  const auto& params = optimizer.param_groups().at(0).params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    auto found = optimizer.state().find(params[i].unsafeGetTensorImpl());
    if (found == optimizer.state().end()) continue;
    auto entry = stringDict();
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(found->second.get())) {
      entry.insert("momentum_buffer", sgd->momentum_buffer().detach().cpu().clone());
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adam->step()), torch::kFloat32));
      entry.insert("exp_avg", adam->exp_avg().detach().cpu().clone());
      entry.insert("exp_avg_sq", adam->exp_avg_sq().detach().cpu().clone());
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adamw->step()), torch::kFloat32));
      entry.insert("exp_avg", adamw->exp_avg().detach().cpu().clone());
      entry.insert("exp_avg_sq", adamw->exp_avg_sq().detach().cpu().clone());
    }
    state.insert(static_cast<std::int64_t>(i), entry);
  }
  auto group = stringDict();
  group.insert("lr", optimizer.param_groups().at(0).options().get_lr());
  group.insert("momentum", o.momentum);
  group.insert("weight_decay", o.weightDecay);
  // Generic lists only: typed ones pickle as calls Python's weights_only load refuses.
  auto betas = c10::impl::GenericList(c10::AnyType::get());
  betas.push_back(o.beta1);
  betas.push_back(o.beta2);
  group.insert("betas", betas);
  group.insert("eps", o.eps);
  auto indices = c10::impl::GenericList(c10::AnyType::get());
  for (std::size_t i = 0; i < params.size(); ++i) indices.push_back(static_cast<std::int64_t>(i));
  group.insert("params", indices);
  auto groups = c10::impl::GenericList(c10::AnyType::get());
  groups.push_back(group);
  auto dict = stringDict();
  dict.insert("name", o.name);
  dict.insert("state", state);
  dict.insert("param_groups", groups);
  return dict;
}

void loadOptimizerState(torch::optim::Optimizer& optimizer, const OptimizerOptions& o,
                        const GenericDict& dict, const c10::Device& device) {
  const auto name = dict.at("name").toStringRef();
  if (name != o.name) {
    throw CheckpointMismatchError(fmt::format(
        "the checkpoint holds {} optimizer state, this run uses --optimizer {}; resume with "
        "--optimizer {} or start fresh with --resume none",
        name, o.name, name));
  }
  const auto& params = optimizer.param_groups().at(0).params();
  for (const auto& item : dict.at("state").toGenericDict()) {
    const auto i = item.key().toInt();
    if (i < 0 || i >= static_cast<std::int64_t>(params.size())) {
      throw CheckpointMismatchError(
          fmt::format("optimizer state for parameter {}, the model has {}", i, params.size()));
    }
    const auto entry = item.value().toGenericDict();
    auto tensor = [&](const char* key) { return entry.at(key).toTensor().to(device).clone(); };
    std::unique_ptr<torch::optim::OptimizerParamState> state;
    if (o.name == "sgd") {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(tensor("momentum_buffer"));
      state = std::move(s);
    } else if (o.name == "adam") {
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(static_cast<std::int64_t>(entry.at("step").toTensor().item<double>()));
      s->exp_avg(tensor("exp_avg"));
      s->exp_avg_sq(tensor("exp_avg_sq"));
      state = std::move(s);
    } else {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(static_cast<std::int64_t>(entry.at("step").toTensor().item<double>()));
      s->exp_avg(tensor("exp_avg"));
      s->exp_avg_sq(tensor("exp_avg_sq"));
      state = std::move(s);
    }
    optimizer.state()[params[i].unsafeGetTensorImpl()] = std::move(state);
  }
}

// Parameters and buffers by name, as Module::state_dict() would list them.
std::vector<std::pair<std::string, at::Tensor>> namedState(torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : module.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

void loadModelState(torch::nn::Module& module, const GenericDict& saved) {
  torch::NoGradGuard noGrad;
  auto state = namedState(module);
  if (static_cast<std::size_t>(saved.size()) != state.size()) {
    throw CheckpointMismatchError(
        fmt::format("the checkpoint holds {} tensors, the model has {}: it was written for another "
                    "model (--model) or model configuration",
                    saved.size(), state.size()));
  }
  for (auto& [name, tensor] : state) {
    auto found = saved.find(name);
    if (found == saved.end()) {
      throw CheckpointMismatchError(
          fmt::format("the checkpoint has no tensor '{}': it was written for "
                      "another model (--model)",
                      name));
    }
    const auto value = found->value().toTensor();
    if (value.sizes() != tensor.sizes()) {
      throw CheckpointMismatchError(
          fmt::format("'{}' has shape [{}] in the checkpoint, [{}] in the model", name,
                      fmt::join(value.sizes(), ","), fmt::join(tensor.sizes(), ",")));
    }
    tensor.copy_(value);
  }
}

}  // namespace

at::Tensor cpuRngState() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void setCpuRngState(const at::Tensor& state) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

c10::IValue makeCheckpointPayload(const TrainObjects& objects, const TrainProgress& progress,
                                  const std::vector<at::Tensor>& rngStates,
                                  const std::string& configText) {
  auto model = stringDict();
  for (const auto& [name, tensor] : namedState(objects.model)) {
    model.insert(name, tensor.detach().cpu().clone());
  }
  auto rngs = c10::impl::GenericList(c10::AnyType::get());
  for (const auto& state : rngStates) rngs.push_back(state.cpu());
  auto rng = stringDict();
  rng.insert("cpu", rngs);
  auto sampler = stringDict();
  sampler.insert("epoch", progress.epoch);
  sampler.insert("start", progress.samplerStart);
  sampler.insert("seed", static_cast<std::int64_t>(progress.seed));
  sampler.insert("num_samples", progress.numSamples);
  auto out = stringDict();
  out.insert("format", kCheckpointFormat);
  out.insert("model", model);
  out.insert("optimizer", optimizerStateDict(objects.optimizer, objects.optimizerOptions));
  out.insert("step", progress.step);
  out.insert("epoch", progress.epoch);
  out.insert("sampler", sampler);
  out.insert("rng", rng);
  out.insert("world_size", progress.worldSize);
  out.insert("config", configText);
  return out;
}

TrainProgress restoreCheckpoint(const c10::IValue& payload, const std::string& path,
                                const TrainObjects& objects, int rank, int worldSize,
                                const c10::Device& device) {
  if (!payload.isGenericDict()) {
    throw CheckpointMismatchError(
        fmt::format("'{}' is not a ddprun checkpoint (not a dict)", path));
  }
  const auto dict = payload.toGenericDict();
  const auto format = dict.contains("format") && dict.at("format").isString()
                          ? dict.at("format").toStringRef()
                          : std::string("none");
  if (format != kCheckpointFormat) {
    throw CheckpointMismatchError(
        fmt::format("'{}' is not a ddprun checkpoint (format '{}', expected '{}')", path, format,
                    kCheckpointFormat));
  }
  loadModelState(objects.model, dict.at("model").toGenericDict());
  loadOptimizerState(objects.optimizer, objects.optimizerOptions,
                     dict.at("optimizer").toGenericDict(), device);
  TrainProgress progress;
  progress.step = dict.at("step").toInt();
  progress.epoch = dict.at("epoch").toInt();
  const auto sampler = dict.at("sampler").toGenericDict();
  progress.samplerStart = sampler.at("start").toInt();
  progress.seed = static_cast<std::uint64_t>(sampler.at("seed").toInt());
  progress.numSamples = sampler.at("num_samples").toInt();
  progress.worldSize = dict.at("world_size").toInt();
  const auto rngs = dict.at("rng").toGenericDict().at("cpu").toList();
  if (progress.worldSize == worldSize && static_cast<int>(rngs.size()) == worldSize) {
    setCpuRngState(rngs.get(rank).toTensor());
  } else {
    log::warn("train",
              "event=world_size_changed checkpoint_world_size={} world_size={} "
              "(the data order differs from the original run from here on)",
              progress.worldSize, worldSize);
  }
  return progress;
}

}  // namespace ddp::train
