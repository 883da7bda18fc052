// Subcommands of qctl; each registers its flags on the CLI11 app and runs when selected.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace quant::qctl {

// Returns the process exit code.
using Runner = std::function<int()>;

Runner AddEvalCommand(CLI::App& app);
Runner AddQuantizeCommand(CLI::App& app);

// One clear error line on stderr: "qctl: error: <message>".
void PrintError(const std::string& message);
// Progress bar on stderr when it is a terminal; nothing otherwise.
void PrintProgress(const std::string& phase, int64_t done, int64_t total);

}  // namespace quant::qctl
