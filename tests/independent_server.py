#!/usr/bin/env python3
"""An independent implementation of the server side of CDS signing, written from the provider's
documentation (docs/cds-api.md §1.4) with only the Python standard library. It shares no code
with rdbvault; the tests point `rdbvault api` at it to show the client speaks the spec, not just
our own simulator.

usage: independent_server.py PORT AK SECRET
Every correctly signed request gets {"Code": "Success", "Data": {"method", "action", "query",
"body"}}: the parameters exactly as the server decoded them. A bad signature gets HTTP 403 with
Code SignatureDoesNotMatch.
"""
import base64
import hashlib
import hmac
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, AK, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def rfc3986(s):
    return urllib.parse.quote(s, safe="-_.~")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, doc):
        body = json.dumps(doc, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self, method):
        path, _, raw_query = self.path.partition("?")
        if path.rstrip("/") != "/redis":
            return self.reply(404, {"Code": "ResourceNotFound", "Message": path})
        params = {}
        # form-decode: '+' is a space; duplicate names keep the first value
        for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
            params.setdefault(k, v)
        signature = params.pop("Signature", "")
        canonical = "&".join(rfc3986(k) + "=" + rfc3986(v) for k, v in sorted(params.items()))
        string_to_sign = method + "&%2F&" + rfc3986(canonical)
        want = base64.b64encode(hmac.new(SECRET.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()
        if params.get("AccessKeyId") != AK or not hmac.compare_digest(want, signature):
            return self.reply(403, {"Code": "SignatureDoesNotMatch", "Message": "bad signature"})
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if method == "POST" else None
        action_params = {k: v for k, v in params.items() if k not in (
            "Action", "AccessKeyId", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp", "Version")}
        self.reply(200, {"Code": "Success", "Message": "success", "Data": {
            "method": method, "action": params.get("Action"), "query": action_params, "body": body}})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
