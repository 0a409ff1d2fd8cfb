// "HOST:PORT" listen addresses (the HTTP listeners: metrics, OpenAI API).
#pragma once

#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace chorus {

// Splits at the last ':'; PORT must be 0..65535 (0: any free port). `what` names the setting
// in the error ("metrics_listen_address: 'x' is not HOST:PORT").
absl::StatusOr<std::pair<std::string, int>> SplitHostPort(const std::string& address,
                                                          std::string_view what);

}  // namespace chorus
