// errorOf<E>(f): the message of the E that f throws, or what happened instead, so that a
// test compares whole messages and sees an unexpected type or no exception at all.
#pragma once

#include <exception>
#include <string>

namespace ddp::testing {

template <typename Expected, typename F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const Expected& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  return "no exception";
}

}  // namespace ddp::testing
