// The one error type of data/: input that cannot be used (a missing, malformed or too
// short file, or options that cannot work with it). Every reader says in it which file,
// where (line and column, or byte offset), what it expected, what it found and, where
// the fix is not obvious, what to do.
#pragma once

#include "runtime/error.h"

namespace ddp::data {

class DataError : public PermanentError {
 public:
  using PermanentError::PermanentError;
};

}  // namespace ddp::data
