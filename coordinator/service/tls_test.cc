// TLS and mutual TLS on the service's gRPC channels, for real: the test makes its own CA (and a
// rogue one) with the openssl command, starts quant-coordinator with a server certificate that
// requires client certificates, and shows that qctl and quant-worker with a certificate from the
// CA get in, while a client without a certificate, with one from another CA, or in plaintext is
// refused; a bad certificate file is one clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "coordinator/service/service_test_util.h"

namespace {

namespace fs = std::filesystem;
using quant::testing::Coordinator;
using quant::testing::RunCommand;
using quant::testing::Worker;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tls_test_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "token") << "t0ken\n";
    std::ofstream(dir_ / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    const std::string d = dir_.string();
    int rc = 0;
    for (const std::string& cmd : {
             // The CA, a server and a client certificate signed by it.
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + d + "/ca.key -out " + d +
                 "/ca.pem -days 2 -subj /CN=quant-test-ca",
             Leaf(d, "server", "ca"), Leaf(d, "client", "ca"), Leaf(d, "quant-worker-1", "ca"),
             // Another CA and a client certificate of its own.
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + d + "/rogue.key -out " + d +
                 "/rogue.pem -days 2 -subj /CN=rogue-ca",
             Leaf(d, "intruder", "rogue")}) {
      const std::string out = RunCommand(cmd, &rc);
      ASSERT_EQ(rc, 0) << cmd << "\n" << out;
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string Leaf(const std::string& d, const std::string& name, const std::string& ca) {
    return "openssl req -newkey rsa:2048 -nodes -keyout " + d + "/" + name + ".key -out " + d +
           "/" + name + ".csr -subj /CN=" + name + " && openssl x509 -req -in " + d + "/" + name +
           ".csr -CA " + d + "/" + ca + ".pem -CAkey " + d + "/" + ca + ".key -CAcreateserial -out " +
           d + "/" + name + ".pem -days 2 -extfile " + d + "/san.ext";
  }
  // `qctl list` against the coordinator with these TLS flags; its exit status.
  int List(const Coordinator& c, const std::string& flags, std::string* out) {
    int rc = 0;
    *out = RunCommand(std::string(QCTL_BINARY) + " list --coordinator " + c.grpc_address() +
                          " " + flags,
                      &rc);
    return rc;
  }
  fs::path dir_;
};

TEST_F(TlsTest, OnlyClientsWithACertificateFromTheCaGetIn) {
  const std::string d = dir_.string();
  Coordinator c(dir_ / "state.db", dir_ / "token",
                {"--tls-cert", d + "/server.pem", "--tls-key", d + "/server.key",
                 "--tls-client-ca", d + "/ca.pem", "--worker-cert-cn", "quant-worker"});
  ASSERT_TRUE(c.up());
  std::string out;
  const std::string ca = "--tls-ca " + d + "/ca.pem";
  EXPECT_EQ(List(c, ca + " --tls-cert " + d + "/client.pem --tls-key " + d + "/client.key", &out),
            0)
      << out;
  EXPECT_NE(List(c, ca, &out), 0) << "no client certificate: " << out;
  EXPECT_NE(List(c, ca + " --tls-cert " + d + "/intruder.pem --tls-key " + d + "/intruder.key",
                 &out),
            0)
      << "a certificate from another CA: " << out;
  EXPECT_NE(List(c, "", &out), 0) << "plaintext: " << out;
  EXPECT_NE(List(c, "--tls-ca " + d + "/rogue.pem --tls-cert " + d + "/client.pem --tls-key " +
                        d + "/client.key",
                 &out),
            0)
      << "the server's certificate checked against the wrong CA: " << out;
  // A worker with a worker certificate (CN quant-worker-1) from the CA registers over mTLS.
  Worker w(c.grpc_address(), "tls-worker", dir_ / "worker.log",
           {"--tls-ca", d + "/ca.pem", "--tls-cert", d + "/quant-worker-1.pem", "--tls-key",
            d + "/quant-worker-1.key"});
  EXPECT_TRUE(w.up());
  // A client certificate from the same CA but of no worker identity (qctl's) cannot lease.
  auto slurp = [](const std::string& f) {
    std::ifstream in(f);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = slurp(d + "/ca.pem");
  ssl.pem_cert_chain = slurp(d + "/client.pem");
  ssl.pem_private_key = slurp(d + "/client.key");
  auto stub = quant::v1::Workers::NewStub(
      grpc::CreateChannel(c.grpc_address(), grpc::SslCredentials(ssl)));
  grpc::ClientContext ctx;
  quant::v1::LeaseRequest lr;
  lr.set_protocol(quant::v1::PROTOCOL_VERSION);
  lr.set_worker_id("impostor");
  quant::v1::LeaseResponse lease;
  EXPECT_EQ(stub->Lease(&ctx, lr, &lease).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // A bad file is one clear error line and exit 1.
  std::ofstream(dir_ / "not.pem") << "hello\n";
  EXPECT_EQ(List(c, "--tls-ca " + d + "/not.pem", &out), 256) << out;
  EXPECT_NE(out.find("--tls-ca " + d + "/not.pem: unreadable or not a PEM file"),
            std::string::npos)
      << out;
}

}  // namespace
