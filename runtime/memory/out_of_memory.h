// Recognising a host allocation that failed. The CUDA allocator throws
// c10::OutOfMemoryError, but c10's CPU allocator (DefaultCPUAllocator) throws a plain
// c10::Error whose only mark is its text, e.g. "DefaultCPUAllocator: can't allocate
// memory: you tried to allocate 1099511627776 bytes. Error code 12 (Cannot allocate
// memory)". The trainer (out of memory is permanent) and the data loader (a data set too
// large) both ask here, so that the text is matched in one place.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <c10/util/Exception.h>

namespace ddp::memory {

// The CPU allocator's failure, from "can't allocate memory" to the end of its first
// sentence ("can't allocate memory: you tried to allocate N bytes"); nullopt for any other
// error.
inline std::optional<std::string> hostOutOfMemoryDetail(const c10::Error& error) {
  const std::string_view message = error.what_without_backtrace();
  const auto at = message.find("can't allocate memory");
  if (at == std::string_view::npos) return std::nullopt;
  return std::string(message.substr(at, message.find('.', at) - at));
}

}  // namespace ddp::memory
