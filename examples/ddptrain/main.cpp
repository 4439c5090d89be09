// ddptrain: data-parallel training of a model from the zoo (models/) on a real data set
// (data/), with checkpoints on rank 0 and resume on every rank. It is also the worked
// example of the runtime's API; the whole program is:
//
//   config  = parseCommandLine(argc, argv)          flags > --config YAML > defaults
//   dist    = ddp::init(config.init)                env -> rendezvous -> process group
//   splits  = loadDataset(...)                      every rank the same splits
//   model   = createModel(...)
//   result  = Trainer(dist, model, options, classification()).fit(train, test)
//
//   ddprun --nproc-per-node 2 -- ddptrain --model cnn --data-path /usr/share/datasets/fashion-mnist
#include <csignal>
#include <iostream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "data/dataset.h"
#include "examples/ddptrain/train_config.h"
#include "models/model_zoo.h"
#include "runtime/build_info.h"
#include "runtime/distributed.h"
#include "runtime/log/logging.h"
#include "runtime/train/checkpointer.h"
#include "runtime/train/trainer.h"

namespace {

using ddptrain::TrainConfig;

int run(const TrainConfig& config, const std::string& configText) {
  ddp::train::installStopSignalHandlers();
  // Note [Completion marker]: a pod of a finished job, recreated, ends here instead of
  // waiting for peers that will not come. --resume none or another configuration trains.
  if (config.trainer.resume == "auto") {
    const auto marker = ddp::train::readCompletionMarker(config.trainer.checkpointDir);
    if (marker && marker->configText == configText) {
      ddp::log::info("ddptrain",
                     "event=already_complete step={} checkpoint={} finished_at={} (this run "
                     "finished; --resume none trains again)",
                     marker->step, marker->checkpoint, marker->finishedAt);
      return ddp::kExitOk;
    }
  }
  auto dist = ddp::init(config.init);
  if (config.threads > 0) torch::set_num_threads(config.threads);
  torch::manual_seed(config.trainer.seed);  // same initial weights everywhere (rank 0's win)

  ddp::data::DatasetOptions dataOptions;
  dataOptions.kind = config.data;
  dataOptions.path = config.dataPath;
  dataOptions.testFraction = config.testFraction;
  dataOptions.seed = config.trainer.seed;
  dataOptions.blockSize = config.blockSize;
  dataOptions.syntheticSamples = config.syntheticSamples;
  const auto splits = ddp::data::loadDataset(dataOptions);

  ddp::models::ModelSpec spec{.name = config.model,
                              .sampleShape = splits.sampleShape,
                              .numClasses = splits.numClasses,
                              .gptLayers = config.gptLayers,
                              .gptHeads = config.gptHeads,
                              .gptEmbedding = config.gptEmbedding};
  auto model = ddp::models::createModel(spec);
  model->to(dist.device);
  if (dist.rank() == 0) {
    ddp::log::info("ddptrain", "data: {}", splits.description);
    ddp::log::info("ddptrain", "model: {}", ddp::models::describeModel(spec, *model));
  }

  auto options = config.trainer;
  options.configText = configText;
  ddp::train::Trainer trainer(dist, model, options, ddp::train::classification());
  ddp::train::InMemoryDataset train(splits.train.inputs, splits.train.targets);
  ddp::train::InMemoryDataset test(splits.test.inputs, splits.test.targets);
  const auto result = trainer.fit(train, test);
  if (result.stoppedBySignal != 0) {
    dist.group->barrier()->wait();
    return result.stoppedBySignal == SIGINT ? ddp::kExitSigint : ddp::kExitSigterm;
  }
  if (dist.rank() == 0) {
    std::cout << fmt::format(
                     "final model={} data={} world_size={} steps={} test_accuracy={:.4f} "
                     "test_loss={:.4f} samples_per_s={:.0f} wall_s={:.1f}",
                     config.model, config.data, dist.worldSize(), result.steps,
                     result.test.value("accuracy"), result.test.loss, result.samplesPerSecond,
                     result.wallSeconds)
              << std::endl;
  }
  // Rank 0 hosts the store: nobody leaves before everybody is done with it.
  dist.group->barrier()->wait();
  return ddp::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto parsed = ddptrain::parseCommandLine(argc, argv);
    if (parsed.help) {
      std::cout << ddptrain::helpText() << std::endl;
      return ddp::kExitOk;
    }
    if (parsed.version) {
      std::cout << ddp::describeBuild(ddp::buildInfo()) << std::endl;
      return ddp::kExitOk;
    }
    const auto& config = parsed.config;
    const auto configText = ddptrain::toYaml(config);
    if (parsed.printConfig) {
      std::cout << configText;
      return ddp::kExitOk;
    }
    // Note [Log level precedence]: the flag or the config file, else DDPRUN_LOG_LEVEL.
    const bool levelGiven = config.sources.at("log-level") != "default";
    ddp::log::setup(
        "-", ddp::log::resolveLevel(levelGiven ? std::optional(config.logLevel) : std::nullopt));
    return run(config, configText);
  } catch (const std::exception& e) {
    // Note [Two error families]: the family decides permanent (2) or transient (200).
    std::cerr << "ddptrain: " << ddp::errorMessage(e) << std::endl;
    ddp::writeErrorFile(e);  // Note [The error file]: the launcher names the culprit from it
    return ddp::exitCodeFor(e);
  }
}
