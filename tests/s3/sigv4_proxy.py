#!/usr/bin/env python3
"""A signature-checking front for s3rver (which checks no signatures): every request's AWS SigV4
signature is recomputed with botocore (AWS's own implementation, Debian's python3-botocore) from
the headers the client signed and the secret this proxy knows; a mismatch is answered 403
SignatureDoesNotMatch, a payload whose x-amz-content-sha256 is wrong 400
XAmzContentSHA256Mismatch, and good requests go on to s3rver unchanged. Prints "proxy PORT".

Usage: sigv4_proxy.py --upstream-port N --access-key AK --secret-key SK [--region R]
"""
import argparse
import hashlib
import http.client
import http.server
import re
import sys

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/[^,]+,\s*SignedHeaders=([^,]+),\s*"
                  r"Signature=([0-9a-f]+)")


def error(handler, status, code, message):
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def make_handler(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # one line per request on stderr: method, path, verdict
            pass

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            m = AUTH.match(self.headers.get("Authorization", ""))
            if not m:
                sys.stderr.write(f"{self.command} {self.path}: unsigned\n")
                return error(self, 403, "AccessDenied", "requests must be signed")
            access_key, signed, signature = m.groups()
            if access_key != args.access_key:
                return error(self, 403, "InvalidAccessKeyId", "unknown access key")
            sent_hash = self.headers.get("x-amz-content-sha256", "")
            if sent_hash != "UNSIGNED-PAYLOAD" and sent_hash != hashlib.sha256(body).hexdigest():
                return error(self, 400, "XAmzContentSHA256Mismatch", "payload hash mismatch")
            names = signed.split(";")
            headers = {n: self.headers.get(n, "") for n in names}
            request = AWSRequest(method=self.command, url=f"http://{self.headers['Host']}{self.path}",
                                 headers=headers, data=body)
            request.context["timestamp"] = self.headers.get("x-amz-date", "")
            auth = S3SigV4Auth(Credentials(args.access_key, args.secret_key), "s3", args.region)
            canonical = auth.canonical_request(request)
            expected = auth.signature(auth.string_to_sign(request, canonical), request)
            if expected != signature:
                sys.stderr.write(f"{self.command} {self.path}: SignatureDoesNotMatch\n")
                return error(self, 403, "SignatureDoesNotMatch",
                             "The request signature we calculated does not match")
            rng = self.headers.get("Range")
            sys.stderr.write(f"{self.command} {self.path}: signature ok"
                             f"{' ' + rng if rng else ''}\n")
            upstream = http.client.HTTPConnection("127.0.0.1", args.upstream_port, timeout=300)
            upstream.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items()
                                      if k.lower() != "expect"})
            resp = upstream.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            # HEAD: the object's length as s3rver gave it; otherwise the body's.
            length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
            self.send_header("Content-Length", str(length or 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--access-key", required=True)
    ap.add_argument("--secret-key", required=True)
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args))
    print(f"proxy {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
