// The one absl::Status <-> grpc::Status conversion: the service's codes map one to one both ways
// with their messages; an unmapped code leaves the coordinator as INTERNAL.
#include "proto/grpc_status.h"

#include <gtest/gtest.h>

namespace quant {
namespace {

TEST(GrpcStatus, TheServicesCodesRoundTripWithTheirMessages) {
  EXPECT_TRUE(ToGrpc(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpc(grpc::Status::OK).ok());
  const std::pair<absl::StatusCode, grpc::StatusCode> codes[] = {
      {absl::StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
      {absl::StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
      {absl::StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
      {absl::StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
      {absl::StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
      {absl::StatusCode::kUnauthenticated, grpc::StatusCode::UNAUTHENTICATED},
      {absl::StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
      {absl::StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::StatusCode::kUnimplemented, grpc::StatusCode::UNIMPLEMENTED},
  };
  for (const auto& [absl_code, grpc_code] : codes) {
    const grpc::Status out = ToGrpc(absl::Status(absl_code, "job spec: \"out\": bad"));
    EXPECT_EQ(out.error_code(), grpc_code);
    EXPECT_EQ(out.error_message(), "job spec: \"out\": bad");
    const absl::Status back = FromGrpc(out);
    EXPECT_EQ(back.code(), absl_code);
    EXPECT_EQ(back.message(), "job spec: \"out\": bad");
  }
}

TEST(GrpcStatus, OtherCodesLeaveAsInternalAndEveryGrpcCodeComesBack) {
  EXPECT_EQ(ToGrpc(absl::DataLossError("x")).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(ToGrpc(absl::UnknownError("x")).error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "late")).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::CANCELLED, "gone")).code(),
            absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace quant
