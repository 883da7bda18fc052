// qctl: the command-line client. `eval` and `quantize` run embedded, in-process.
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>

#include "common/alloc.h"
#include "common/exceptions.h"
#include "coordinator/qctl/commands.h"

namespace quant::qctl {

void PrintError(const std::string& message) {
  std::fprintf(stderr, "qctl: error: %s\n", message.c_str());
}

std::string& CommandLine() {
  static std::string* line = new std::string;
  return *line;
}

std::string ShellQuote(const std::string& arg) {
  const bool plain = !arg.empty() && arg.find_first_not_of(
                                         "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                         "0123456789_./=:,@%+-") == std::string::npos;
  if (plain) return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

void PrintProgress(const std::string& phase, int64_t done, int64_t total) {
  static const bool tty = isatty(STDERR_FILENO) != 0;
  if (!tty || total <= 0) return;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(kWidth * done / total);
  std::fprintf(stderr, "\r%-10s [%s%s] %lld/%lld", phase.c_str(), std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total));
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace quant::qctl

int main(int argc, char** argv) {
  quant::KeepFreedMemory();
  CLI::App app{"qctl: quantize and evaluate Mixture-of-Experts checkpoints"};
  app.require_subcommand(1);
  std::map<CLI::App*, quant::qctl::Runner> runners;
  quant::qctl::Runner eval = quant::qctl::AddEvalCommand(app);
  runners[app.get_subcommand("eval")] = eval;
  quant::qctl::Runner quantize = quant::qctl::AddQuantizeCommand(app);
  runners[app.get_subcommand("quantize")] = quantize;
#if defined(QCTL_WITH_SERVICE)
  quant::qctl::AddServiceCommands(app, &runners);
#endif
  for (int i = 0; i < argc; ++i) {
    quant::qctl::CommandLine() += (i > 0 ? " " : "") + quant::qctl::ShellQuote(argv[i]);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    quant::qctl::PrintError(e.what());
    return 2;
  }
  for (auto& [sub, run] : runners) {
    if (!sub->parsed()) continue;
    // Expected failures come back as statuses; this turns what escapes anyway (std::bad_alloc
    // above all, which aborted with rc 134 and no message) into the same one line.
    try {
      return run();
    } catch (...) {
      quant::qctl::PrintError(
          std::string(quant::CurrentExceptionStatus(sub->get_name()).message()));
      return 1;
    }
  }
  return 2;
}
