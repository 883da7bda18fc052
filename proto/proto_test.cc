// The generated messages: the protocol version constant, and a lease that survives the wire.
#include <gtest/gtest.h>

#include "proto/quant.grpc.pb.h"
#include "proto/quant.pb.h"

namespace {

TEST(Proto, VersionIsTwo) { EXPECT_EQ(quant::v1::PROTOCOL_VERSION, 2); }

TEST(Proto, LeaseRoundTrips) {
  quant::v1::LeaseResponse r;
  quant::v1::TaskLease* t = r.mutable_task();
  t->set_job_id(7);
  t->set_task_id(12);
  t->set_epoch(3);
  t->set_name("L3/gsq[1/4]");
  t->add_gang("w0:7000");
  t->add_gang("w1:7000");
  const std::string wire = r.SerializeAsString();
  quant::v1::LeaseResponse back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_TRUE(back.has_task());
  EXPECT_EQ(back.task().epoch(), 3);
  EXPECT_EQ(back.task().name(), "L3/gsq[1/4]");
  EXPECT_EQ(back.task().gang_size(), 2);
  quant::v1::LeaseResponse bad;
  EXPECT_FALSE(bad.ParseFromString(std::string("\xff\xff\xff", 3)));
}

}  // namespace
