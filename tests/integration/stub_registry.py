"""stub_registry.py — a STUB of the Confluent Schema Registry REST API (Python stdlib only), for
tests: no real registry runs here (Apicurio Registry's app is not runnable from Maven Central:
its dependency io.apicurio:apicurio-registry-schema-util-provider is not served there, and
Confluent's own registry is not on Maven Central at all).

Implements what kjobs and the two serializers the tests use need, as Confluent documents it:
  POST /subjects/{subject}/versions   {"schema": "...", "schemaType"?}  -> {"id": N}
      (the same schema text under any subject gets the same id, like the real registry)
  GET  /schemas/ids/{id}              -> {"schema": "..."[, "schemaType": T]}
                                         or 404 {"error_code": 40403, "message": ...}
  GET  /config/{subject}              -> {"compatibilityLevel": L} or 404 (error_code 40401)
  PUT  /config/{subject}              -> echoes {"compatibility": L}
Optional HTTP basic auth (401 otherwise). Test controls, not part of the API:
  stub.down = True   every request answers 503 {"error_code": 50301}
  stub.requests      list of (method, path) served, for "asked once" checks
Run it in-process (StubRegistry(...).start()) or as a script: stub_registry.py PORT [USER PASS].
"""
import base64
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubRegistry:
    def __init__(self, port=0, user=None, password=None):
        self.user, self.password = user, password
        self.down = False
        self.requests = []
        self.schemas = {}  # id -> (schema text, schemaType or None)
        self.ids = {}      # (schema text, schemaType) -> id
        self.subjects = {}  # subject -> [ids]
        self.config = {}
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with stub.lock:
                    stub.requests.append((method, self.path))
                if stub.user is not None:
                    want = "Basic " + base64.b64encode(
                        f"{stub.user}:{stub.password}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        return self._send(401, {"error_code": 40101,
                                                "message": "Unauthorized"})
                if stub.down:
                    return self._send(503, {"error_code": 50301, "message": "stub is down"})
                path = self.path.split("?")[0].rstrip("/")
                m = re.fullmatch(r"/schemas/ids/(\d+)", path)
                if method == "GET" and m:
                    got = stub.schemas.get(int(m.group(1)))
                    if not got:
                        return self._send(404, {"error_code": 40403,
                                                "message": f"Schema {m.group(1)} not found"})
                    answer = {"schema": got[0]}
                    if got[1]:
                        answer["schemaType"] = got[1]
                    return self._send(200, answer)
                m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
                if method == "POST" and m:
                    req = json.loads(raw or b"{}")
                    return self._send(200, {"id": stub.register(m.group(1), req["schema"],
                                                                req.get("schemaType"))})
                m = re.fullmatch(r"/config/([^/]+)", path)
                if m and method == "GET":
                    if m.group(1) not in stub.config:
                        return self._send(404, {"error_code": 40401,
                                                "message": "Subject not found"})
                    return self._send(200, {"compatibilityLevel": stub.config[m.group(1)]})
                if m and method == "PUT":
                    level = json.loads(raw or b"{}").get("compatibility", "BACKWARD")
                    stub.config[m.group(1)] = level
                    return self._send(200, {"compatibility": level})
                return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def register(self, subject, schema, schema_type=None):
        """Register directly (what POST /subjects/{subject}/versions does); returns the id."""
        if schema_type == "AVRO":
            schema_type = None
        with self.lock:
            key = (schema, schema_type)
            if key not in self.ids:
                self.ids[key] = len(self.ids) + 1
                self.schemas[self.ids[key]] = key
            self.subjects.setdefault(subject, []).append(self.ids[key])
            return self.ids[key]

    def gets_of(self, schema_id):
        with self.lock:
            return sum(1 for m, p in self.requests if m == "GET" and p == f"/schemas/ids/{schema_id}")

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    args = sys.argv[1:]
    stub = StubRegistry(int(args[0]) if args else 0, *(args[1:3] if len(args) >= 3 else ()))
    print(stub.url, flush=True)
    stub.server.serve_forever()
