// The job's choices as types (DESIGN.md section 2: a spec with typed enums): each enum with the
// names its JSON and flags use, in the order of its values. NameOf(e) gives the name and
// EnumFromName<E>(text) the value (nullopt for any other text); EnumNameList<E>() lists them
// for messages ("rtn, gptq, gsq").
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "job/scope.h"
#include "storage/compressed_tensors.h"

namespace quant::quant {

enum class Grid { kSymmetric, kAsymmetric };
// The checkpoint formats are storage's (storage/compressed_tensors.h).
using ExportFormat = ::quant::storage::ExportFormat;
enum class GsqObjective {
  kExpertOutput,  // MSE of each expert's output vs its full-precision output on routed tokens
  kLayerLocal,    // tr(dW H dW^T) per linear, no token replay
};

}  // namespace quant::quant

namespace quant::tasks {

enum class Method { kRtn, kGptq, kGsq };
enum class Device { kCpu, kCuda };  // cuda: GSQ's steps and the forwards on the GPU
// Which layers make the next layer's calibration inputs: the quantized ones (GPTQ/GSQ, DESIGN.md
// section 4) or the original ones (every layer calibrated on the full-precision activations).
enum class CalibInputs { kQuantized, kOriginal };

}  // namespace quant::tasks

namespace quant {

template <typename E>
struct EnumNames;  // kNames: the names, indexed by the enum's values
template <>
struct EnumNames<tasks::Method> {
  static constexpr std::array<std::string_view, 3> kNames{"rtn", "gptq", "gsq"};
};
template <>
struct EnumNames<quant::Grid> {
  static constexpr std::array<std::string_view, 2> kNames{"sym", "asym"};
};
template <>
struct EnumNames<quant::Scope> {
  static constexpr std::array<std::string_view, 2> kNames{"experts", "all"};
};
template <>
struct EnumNames<quant::GsqObjective> {
  static constexpr std::array<std::string_view, 2> kNames{"expert-output", "layer-local"};
};
template <>
struct EnumNames<quant::ExportFormat> {
  static constexpr std::array<std::string_view, 2> kNames{"vllm", "native"};
};
template <>
struct EnumNames<tasks::Device> {
  static constexpr std::array<std::string_view, 2> kNames{"cpu", "cuda"};
};
template <>
struct EnumNames<tasks::CalibInputs> {
  static constexpr std::array<std::string_view, 2> kNames{"quantized", "original"};
};

template <typename E>
std::string_view NameOf(E e) {
  return EnumNames<E>::kNames.at(static_cast<size_t>(e));
}

template <typename E>
std::optional<E> EnumFromName(std::string_view text) {
  const auto& names = EnumNames<E>::kNames;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == text) return static_cast<E>(i);
  }
  return std::nullopt;
}

template <typename E>
std::string EnumNameList() {
  std::string list;
  for (std::string_view name : EnumNames<E>::kNames) {
    if (!list.empty()) list += ", ";
    list += name;
  }
  return list;
}

}  // namespace quant
