// Conversions between chorus.v1 protos and core types, and the one absl::Status ->
// grpc::Status mapping (internal to server/).
#pragma once

#include <grpcpp/grpcpp.h>

#include "chorus/admission/admission.h"
#include "chorus/core/request.h"
#include "chorus/v1/chorus.pb.h"

namespace chorus::server {

grpc::Status ToGrpc(const absl::Status& s);
chorus::v1::FinishReason ToProto(FinishReason r);
void ToProto(const DraftResult& d, chorus::v1::Draft* out);
void ToProto(const GenerateResult& r, bool with_drafts, chorus::v1::GenerateResponse* out);
GenerateInput FromProto(const chorus::v1::GenerateRequest& r);

}  // namespace chorus::server
