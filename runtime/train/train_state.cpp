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

// Note [Reading a payload]
// ~~~~~~~~~~~~~~~~~~~~~~~~
// A payload whose `format` is ours can still lack an entry or hold one of another type: a
// file edited by hand, or written by a program that claims our format. c10 would say
// "Argument passed to at() was not in the map." or "Expected Int but got String" and name
// neither the file nor the entry; every entry is read through a PayloadReader instead,
// which throws CheckpointMismatchError (permanent: a restart reads the same file) naming
// both. `name` is the entry's dotted path in the payload ("sampler.start").
class PayloadReader {
 public:
  explicit PayloadReader(const std::string& path) : path_(path) {}

  GenericDict dict(const GenericDict& in, const std::string& name) const {
    const auto value = at(in, name, "a dict");
    if (!value.isGenericDict()) throw mistyped(name, value, "a dict");
    return value.toGenericDict();
  }
  std::int64_t integer(const GenericDict& in, const std::string& name) const {
    const auto value = at(in, name, "an int");
    if (!value.isInt()) throw mistyped(name, value, "an int");
    return value.toInt();
  }
  std::string string(const GenericDict& in, const std::string& name) const {
    const auto value = at(in, name, "a string");
    if (!value.isString()) throw mistyped(name, value, "a string");
    return value.toStringRef();
  }
  c10::List<c10::IValue> list(const GenericDict& in, const std::string& name) const {
    const auto value = at(in, name, "a list");
    if (!value.isList()) throw mistyped(name, value, "a list");
    return value.toList();
  }
  at::Tensor tensor(const GenericDict& in, const std::string& name) const {
    return tensor(at(in, name, "a tensor"), name);
  }
  at::Tensor tensor(const c10::IValue& value, const std::string& name) const {
    if (!value.isTensor()) throw mistyped(name, value, "a tensor");
    return value.toTensor();
  }

  CheckpointMismatchError mistyped(const std::string& name, const c10::IValue& value,
                                   const char* expected) const {
    return mismatch(fmt::format("its '{}' is {}, expected {}", name, describe(value), expected));
  }
  CheckpointMismatchError mismatch(const std::string& what) const {
    return CheckpointMismatchError(fmt::format(
        "'{}' is marked '{}' but {}: it was written by another program or edited. Resume "
        "from another checkpoint (--resume PATH), or start fresh with --resume none",
        path_, kCheckpointFormat, what));
  }
  static std::string describe(const c10::IValue& value) {
    if (value.isInt()) return fmt::format("the int {}", value.toInt());
    if (value.isString()) return fmt::format("the string '{}'", value.toStringRef());
    if (value.isDouble()) return fmt::format("the float {}", value.toDouble());
    if (value.isBool()) return value.toBool() ? "True" : "False";
    if (value.isNone()) return "None";
    if (value.isTensor()) return "a tensor";
    if (value.isGenericDict()) return "a dict";
    if (value.isList()) return "a list";
    return fmt::format("of type {}", value.tagKind());
  }

 private:
  // in[last component of name]; "has no" it when missing.
  c10::IValue at(const GenericDict& in, const std::string& name, const char* expected) const {
    const auto key = name.substr(name.rfind('.') + 1);
    const auto found = in.find(key);
    if (found == in.end()) throw mismatch(fmt::format("has no '{}' (expected {})", name, expected));
    return found->value();
  }

  const std::string& path_;
};

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
      entry.insert("momentum_buffer", sgd->momentum_buffer().detach());
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adam->step()), torch::kFloat32));
      entry.insert("exp_avg", adam->exp_avg().detach());
      entry.insert("exp_avg_sq", adam->exp_avg_sq().detach());
    } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(found->second.get())) {
      entry.insert("step", torch::tensor(static_cast<double>(adamw->step()), torch::kFloat32));
      entry.insert("exp_avg", adamw->exp_avg().detach());
      entry.insert("exp_avg_sq", adamw->exp_avg_sq().detach());
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
                        const GenericDict& dict, const c10::Device& device,
                        const PayloadReader& read) {
  const auto name = read.string(dict, "optimizer.name");
  if (name != o.name) {
    throw CheckpointMismatchError(fmt::format(
        "the checkpoint holds {} optimizer state, this run uses --optimizer {}; resume with "
        "--optimizer {} or start fresh with --resume none",
        name, o.name, name));
  }
  const auto& params = optimizer.param_groups().at(0).params();
  for (const auto& item : read.dict(dict, "optimizer.state")) {
    if (!item.key().isInt()) {
      throw read.mismatch(
          fmt::format("its 'optimizer.state' has the key {}, expected parameter "
                      "indices (ints)",
                      PayloadReader::describe(item.key())));
    }
    const auto i = item.key().toInt();
    if (i < 0 || i >= static_cast<std::int64_t>(params.size())) {
      throw CheckpointMismatchError(
          fmt::format("optimizer state for parameter {}, the model has {}", i, params.size()));
    }
    const auto where = fmt::format("optimizer.state.{}", i);
    if (!item.value().isGenericDict()) throw read.mistyped(where, item.value(), "a dict");
    const auto entry = item.value().toGenericDict();
    // A buffer of the parameter's shape, on `device`.
    auto tensor = [&](const char* key) {
      const auto entryName = fmt::format("{}.{}", where, key);
      const auto value = read.tensor(entry, entryName);
      if (value.sizes() != params[i].sizes()) {
        throw read.mismatch(fmt::format("its '{}' has shape [{}], the parameter [{}]", entryName,
                                        fmt::join(value.sizes(), ","),
                                        fmt::join(params[i].sizes(), ",")));
      }
      return value.to(device).clone();
    };
    auto step = [&] {
      const auto entryName = fmt::format("{}.step", where);
      const auto value = read.tensor(entry, entryName);
      if (value.numel() != 1) {
        throw read.mismatch(
            fmt::format("its '{}' holds {} values, expected one", entryName, value.numel()));
      }
      return static_cast<std::int64_t>(value.item<double>());
    };
    std::unique_ptr<torch::optim::OptimizerParamState> state;
    if (o.name == "sgd") {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(tensor("momentum_buffer"));
      state = std::move(s);
    } else if (o.name == "adam") {
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(step());
      s->exp_avg(tensor("exp_avg"));
      s->exp_avg_sq(tensor("exp_avg_sq"));
      state = std::move(s);
    } else {
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(step());
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

void loadModelState(torch::nn::Module& module, const GenericDict& saved,
                    const PayloadReader& read) {
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
    const auto value = read.tensor(found->value(), "model." + name);
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
    model.insert(name, tensor.detach());
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
  // Note [Reading a payload]. Every entry is read before the model or optimizer changes.
  const PayloadReader read(path);
  TrainProgress progress;
  progress.step = read.integer(dict, "step");
  progress.epoch = read.integer(dict, "epoch");
  const auto sampler = read.dict(dict, "sampler");
  progress.samplerStart = read.integer(sampler, "sampler.start");
  progress.seed = static_cast<std::uint64_t>(read.integer(sampler, "sampler.seed"));
  progress.numSamples = read.integer(sampler, "sampler.num_samples");
  progress.worldSize = read.integer(dict, "world_size");
  const auto rngs = read.list(read.dict(dict, "rng"), "rng.cpu");
  const auto model = read.dict(dict, "model");
  const auto optimizer = read.dict(dict, "optimizer");
  loadModelState(objects.model, model, read);
  loadOptimizerState(objects.optimizer, objects.optimizerOptions, optimizer, device, read);
  if (progress.worldSize == worldSize && static_cast<int>(rngs.size()) == worldSize) {
    const auto name = fmt::format("rng.cpu.{}", rank);
    const auto state = read.tensor(rngs.get(rank), name);
    try {
      setCpuRngState(state);
    } catch (const c10::Error& e) {
      throw read.mismatch(fmt::format("its '{}' is not a CPU generator state ({})", name,
                                      e.what_without_backtrace()));
    }
  } else {
    log::warn("train",
              "event=world_size_changed checkpoint_world_size={} world_size={} "
              "(the data order differs from the original run from here on)",
              progress.worldSize, worldSize);
  }
  return progress;
}

}  // namespace ddp::train
