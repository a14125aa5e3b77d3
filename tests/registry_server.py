"""Real registries for the registry tests and bench: Debian's docker-registry
(distribution 2.8) on a free loopback port, with optional htpasswd basic auth
over TLS (a CA made here with openssl) or a bearer token server run here.

Everything lives in a directory the caller owns; the processes and threads
started here are stopped by stop().  Readiness is polled with a bounded loop.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=orca test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext", cwd=d)
    certdir = d / "certs.d"  # containers' cert dir: only the CA (a lone *.key there is an error)
    certdir.mkdir()
    (certdir / "ca.crt").write_bytes((d / "ca.crt").read_bytes())
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key", "certdir": certdir}


class TokenServer:
    """Issues RS256 JWTs the way distribution's token auth expects (x5c header)."""

    def __init__(self, d: Path, users: dict[str, str], service: str = "orca-test-registry",
                 issuer: str = "orca-test-issuer"):
        d.mkdir(parents=True, exist_ok=True)
        self.dir, self.users, self.service, self.issuer = d, users, service, issuer
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key",
                 "-out", "token.crt", "-days", "2", "-subj", "/CN=orca token signer", cwd=d)
        self.cert = d / "token.crt"
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = parse_qs(urlsplit(self.path).query)
                user = server.check(self.headers.get("Authorization"))
                server.requests.append({"user": user, "scope": q.get("scope", [])})
                if user is None:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(user, q.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def check(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, name, actions = one.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.dir / "token.key")],
                             input=signing.encode(), capture_output=True, check=True).stdout
        return f"{signing}.{_b64(sig)}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Registry:
    """docker-registry serving `dir`/storage on 127.0.0.1:<free port>."""

    def __init__(self, d: Path, *, tls: dict | None = None, htpasswd: dict[str, str] | None = None,
                 token: TokenServer | None = None):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls, self.token = tls, token
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.dir / 'storage'}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}", "  secret: orca-test"]
        if tls:
            lines += ["  tls:", f"    certificate: {tls['cert']}", f"    key: {tls['key']}"]
        if htpasswd:
            entries = [subprocess.run(["htpasswd", "-nbB", u, p], capture_output=True, text=True,
                                      check=True).stdout.strip() for u, p in htpasswd.items()]
            (self.dir / "htpasswd").write_text("\n".join(entries) + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: orca-test", f"    path: {self.dir / 'htpasswd'}"]
        if token:
            lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                      f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert}"]
        (self.dir / "config.yml").write_text("\n".join(lines) + "\n")
        self.start()

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    def start(self) -> None:
        log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.dir / "config.yml")],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        scheme = "https" if self.tls else "http"
        ctx = ssl.create_default_context(cafile=str(self.tls["ca"])) if self.tls else None
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{scheme}://{self.host}/v2/", timeout=2, context=ctx)
                return
            except urllib.error.HTTPError:
                return  # 401: up and asking for auth
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"docker-registry did not start: {(self.dir / 'registry.log').read_text()}")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_size(self) -> int:
        return (self.dir / "registry.log").stat().st_size

    def blob_downloads(self, since: int = 0) -> list[str]:
        """Digests of the blobs served (GET, 200) since log offset `since`, from
        the registry's access log, in order: what clients really downloaded."""
        with open(self.dir / "registry.log", "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200 ', text)

    def blob_data(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def skopeo(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout
