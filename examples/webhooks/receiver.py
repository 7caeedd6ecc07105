#!/usr/bin/env python3
"""A webhook receiver for trying the ledger's deliveries: checks each signature, prints each delivery.

    python3 examples/webhooks/receiver.py --port 9099 --secret change-me-to-16+-chars

Answers 204 to a delivery whose X-Ledger-Signature matches the body, 401 otherwise (the ledger
then retries it). Standard library only.
"""
import argparse
import hashlib
import hmac
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verified(secret: str, body: bytes, header: str) -> bool:
    """The signature is over the raw body, compared in constant time, before the body is parsed."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header or "")


def handler_for(secret: str):
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            delivery = self.headers.get("X-Ledger-Delivery")
            if not verified(secret, body, self.headers.get("X-Ledger-Signature")):
                print(f"REFUSED delivery {delivery}: bad signature", flush=True)
                self.send_response(401)
                self.end_headers()
                return
            payload = json.loads(body)
            print(f"signed delivery {delivery}: {payload.get('kind')} run {payload.get('runId')} "
                  f"status {payload.get('status')} reason {payload.get('reason')}", flush=True)
            print(json.dumps(payload, indent=2), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):  # the deliveries are printed above; no access log
            pass

    return Receiver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--secret", required=True, help="the secret the subscription was created with")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.secret))
    print(f"listening on http://127.0.0.1:{args.port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
