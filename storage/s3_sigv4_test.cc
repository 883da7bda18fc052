// Our SigV4 signing (libcurl's CURLOPT_AWS_SIGV4 as S3Client drives it) against AWS's published
// examples: the S3 API reference's "GET Object" example (virtual-hosted, Range, the empty
// payload's SHA-256) signed by S3Client itself, and two vectors of AWS's SigV4 test suite
// (get-vanilla, get-vanilla-query-order-key-case) signed by libcurl with the client's query
// string (sorted, which libcurl 7.88 does not do by itself). Requests go to a loopback capture
// server acting as the HTTP proxy (http_proxy), so the signed Host is AWS's.
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "storage/s3_client.h"

namespace quant::storage {
namespace {

// Accepts one connection, keeps the request's head, answers 200 with no body.
class CaptureServer {
 public:
  CaptureServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen(fd_, 1);
    thread_ = std::thread([this] {
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      while (request_.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = read(c, buf, sizeof(buf));
        if (n <= 0) break;
        request_.append(buf, static_cast<size_t>(n));
      }
      const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!write(c, reply, sizeof(reply) - 1);
      close(c);
    });
  }
  ~CaptureServer() {
    shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    close(fd_);
  }
  std::string proxy() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The request's head; call once the request is done.
  std::string Request() {
    if (thread_.joinable()) thread_.join();
    return request_;
  }
  // The value of the Authorization header.
  std::string Authorization() {
    const std::string r = Request();
    const size_t at = r.find("\r\nAuthorization: ");
    if (at == std::string::npos) return "";
    const size_t begin = at + 17;
    return r.substr(begin, r.find("\r\n", begin) - begin);
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::string request_;
};

// "Signature=..." and "SignedHeaders=..." of an Authorization value (AWS's examples separate
// the parts with "," and libcurl with ", ").
std::string Part(const std::string& auth, const std::string& name) {
  const size_t at = auth.find(name + "=");
  if (at == std::string::npos) return "";
  const size_t end = auth.find_first_of(", ", at);
  return auth.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

TEST(SigV4VectorsTest, S3GetObjectExampleSignedByTheClient) {
  // docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html, "Example: GET Object".
  CaptureServer server;
  setenv("http_proxy", server.proxy().c_str(), 1);
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
  S3Config c;
  c.endpoint = "http://s3.amazonaws.com";
  c.virtual_hosted = true;
  c.region = "us-east-1";
  c.access_key = "AKIAIOSFODNN7EXAMPLE";
  c.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
  c.amz_date = "20130524T000000Z";
  c.max_attempts = 1;
  auto s3 = S3Client::Create(c);
  ASSERT_TRUE(s3.ok());
  auto got = (*s3)->Get("examplebucket", "test.txt", std::make_pair(uint64_t{0}, uint64_t{10}));
  unsetenv("http_proxy");
  ASSERT_TRUE(got.ok()) << got.status();
  const std::string request = server.Request();
  EXPECT_NE(request.find("Host: examplebucket.s3.amazonaws.com\r\n"), std::string::npos) << request;
  const std::string auth = server.Authorization();
  EXPECT_NE(auth.find("Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            std::string::npos)
      << auth;
  EXPECT_EQ(Part(auth, "SignedHeaders"),
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date");
  EXPECT_EQ(Part(auth, "Signature"),
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// One request signed by libcurl as S3Client signs (CURLOPT_AWS_SIGV4 with a key pair and a
// user-supplied X-Amz-Date), for the test suite's service "service"; the Authorization value.
std::string SignWithLibcurl(const std::string& url) {
  CaptureServer server;
  CURL* curl = curl_easy_init();
  curl_slist* headers = curl_slist_append(nullptr, "X-Amz-Date: 20150830T123600Z");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROXY, server.proxy().c_str());
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:service");
  curl_easy_setopt(curl, CURLOPT_USERPWD, "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_perform(curl);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return server.Authorization();
}

TEST(SigV4VectorsTest, TestSuiteVectorsWithTheClientsQueryString) {
  // AWS's SigV4 test suite (aws-sig-v4-test-suite), credentials AKIDEXAMPLE, 20150830T123600Z.
  const std::string vanilla = SignWithLibcurl("http://example.amazonaws.com/");
  EXPECT_EQ(Part(vanilla, "SignedHeaders"), "SignedHeaders=host;x-amz-date");
  EXPECT_EQ(Part(vanilla, "Signature"),
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  // get-vanilla-query-order-key-case sends Param2 before Param1; the canonical query sorts them,
  // and so does the client's query string.
  const std::string query = S3QueryString({{"Param2", "value2"}, {"Param1", "value1"}});
  EXPECT_EQ(query, "Param1=value1&Param2=value2");
  const std::string ordered = SignWithLibcurl("http://example.amazonaws.com/?" + query);
  EXPECT_EQ(Part(ordered, "Signature"),
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

}  // namespace
}  // namespace quant::storage
