#!/usr/bin/env python3
"""An independent CDS API client, written from the provider's own 2026 documentation sample
(首云OpenAPI(v1.2).md, `get_signature` / `invoke_cdsapi`), using only the Python standard library.

It shares no code with rdbvault: the tests use it to prove that `rdbvault sim` accepts what the
official sample sends (unsorted query, `+` for spaces, GET parameters sent twice) and rejects a
signature keyed with `secret&`.

usage: independent_client.py ENDPOINT AK SECRET METHOD ACTION [JSON_PARAMS] [--amp]
Prints the HTTP status and the response body.
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


def quote2(s, safe="/", encoding=None, errors=None):
    # The DOC's helper: RFC 3986 via urllib's quote.
    return urllib.parse.quote(s, safe=safe, encoding=encoding, errors=errors)


def get_signature(action, ak, secret, method, url, param=None, amp=False):
    timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    d = {
        "Action": action,
        "AccessKeyId": ak,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": str(uuid.uuid1()),
        "SignatureVersion": "1.0",
        "Timestamp": timestamp,
        "Version": "2019-08-08",
    }
    if param:
        d.update(param)
    sorted_items = sorted(d.items(), key=lambda x: x[0])
    canonical = urllib.parse.urlencode(sorted_items, quote_via=quote2, safe="")
    string_to_sign = method + "&%2F&" + quote2(canonical, safe="")
    key = (secret + "&") if amp else secret
    h = hmac.new(key.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    d["Signature"] = base64.b64encode(h.digest()).decode()
    # The DOC appends the params in dict order with urlencode (quote_plus: space -> '+').
    return url + "/?" + urllib.parse.urlencode(d)


def main():
    args = [a for a in sys.argv[1:] if a != "--amp"]
    amp = "--amp" in sys.argv
    endpoint, ak, secret, method, action = args[:5]
    params = json.loads(args[5]) if len(args) > 5 else {}
    base = endpoint.rstrip("/") + "/redis"
    if method == "GET":
        url = get_signature(action, ak, secret, "GET", base, params, amp)
        # invoke_cdsapi passes params= to requests again: every GET parameter appears twice.
        if params:
            url += "&" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, method="GET")
    else:
        url = get_signature(action, ak, secret, "POST", base, {}, amp)
        body = json.dumps(params).encode()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(resp.status)
            print(resp.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code)
        print(e.read().decode())


if __name__ == "__main__":
    main()
