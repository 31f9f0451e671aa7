"""A webhook receiver for the integration tests (tests/api/webhooks.rs): it verifies every
delivery with the official Standard Webhooks library (PyPI `standardwebhooks`), never with
sondakika's own code, and answers as the test tells it.

Prints its port on the first line of stdout. Control, over HTTP on the same port:
  PUT /_control  {"secrets": ["whsec_…", …], "answers": [500, "timeout", 200, …],
                  "hold_secs": 0, "timeout_secs": 5}
    secrets: each delivery is verified with each of them on its own; the log says which did.
    answers: what the next deliveries get, in turn (a status, or "timeout": no answer for
             timeout_secs, then 200); once used up, every delivery gets 200.
    hold_secs: how long to wait before answering each delivery.
  GET /_log      every delivery received: headers, body, which secrets verified it, the answer.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
control = {"secrets": [], "answers": [], "hold_secs": 0, "timeout_secs": 5}
log = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self):
        if self.path == "/_log":
            with lock:
                self.reply(200, json.dumps(log).encode())
        else:
            self.reply(404)

    def do_PUT(self):
        if self.path == "/_control":
            with lock:
                control.update(json.loads(self.body()))
            self.reply(204)
        else:
            self.reply(404)

    def do_POST(self):
        raw = self.body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            secrets = list(control["secrets"])
            answer = control["answers"].pop(0) if control["answers"] else 200
            hold = control["hold_secs"]
            timeout = control["timeout_secs"]
        verified = []
        errors = []
        for i, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(raw, headers)
                verified.append(i)
            except WebhookVerificationError as e:
                errors.append(f"secret {i}: {e}")
        entry = {
            "path": self.path,
            "webhook_id": headers.get("webhook-id"),
            "webhook_timestamp": headers.get("webhook-timestamp"),
            "webhook_signature": headers.get("webhook-signature"),
            "content_type": headers.get("content-type"),
            "body": raw.decode("utf-8"),
            "verified_with": verified,
            "errors": errors,
            "answer": answer,
            "received_at": time.time(),
        }
        with lock:
            log.append(entry)
        if hold:
            time.sleep(hold)
        if answer == "timeout":
            time.sleep(timeout)
            answer = 200
        if not verified:
            # A delivery no secret verifies is refused, as a real receiver would.
            answer = 401
        try:
            self.reply(int(answer), b'{"ok": true}' if int(answer) < 300 else b'{"error": "test says no"}')
        except (BrokenPipeError, ConnectionResetError):
            pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
