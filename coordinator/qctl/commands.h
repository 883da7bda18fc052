// Subcommands of qctl; each registers its flags on the CLI11 app and runs when selected.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "job/job_spec.h"

namespace quant::qctl {

// Returns the process exit code.
using Runner = std::function<int()>;

Runner AddEvalCommand(CLI::App& app);
Runner AddQuantizeCommand(CLI::App& app);
// The service's client commands: submit (same job options as quantize), status, list, cancel,
// watch. Built where gRPC is (QCTL_WITH_SERVICE).
void AddServiceCommands(CLI::App& app, std::map<CLI::App*, Runner>* runners);

// The job options shared by `quantize` and `submit`, and their checks after parsing.
// The typed choices (method, grid, ...) are taken as text into `choices` and parsed by
// FinishJobOptions.
void AddJobOptions(CLI::App* sub, tasks::QuantizeJobSpec* spec, tasks::SpecChoices* choices,
                   bool* no_eval, bool* no_fallback, double* bits);
absl::Status FinishJobOptions(tasks::QuantizeJobSpec& spec, const tasks::SpecChoices& choices,
                              bool no_eval, bool no_fallback, double bits);

// The command line qctl was started with, each argument shell-quoted where it needs it (set by
// main before parsing): what a failure tells the user to run again with --resume.
std::string& CommandLine();
std::string ShellQuote(const std::string& arg);

// One clear error line on stderr: "qctl: error: <message>".
void PrintError(const std::string& message);
// Progress bar on stderr when it is a terminal; nothing otherwise.
void PrintProgress(const std::string& phase, int64_t done, int64_t total);

}  // namespace quant::qctl
