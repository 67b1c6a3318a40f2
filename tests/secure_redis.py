"""A private redis-server secured as a production one is: a password on the default user, an ACL user
for the worker with only what the worker needs, and TLS with a certificate from a CA made for the test.

The shared stack's Redis has none of this, so without this fixture the worker's Redis security would
only be tested against mocks. The server listens on loopback only, on free ports, keeps nothing on
disk, and is stopped by the fixture's teardown whatever the test did.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.harness import free_port

USER = "health"
PASSWORD = "pw-Health-1 with spaces"  # spaces and case: a secret is taken as it is, not stripped or folded
ADMIN_PASSWORD = "admin-pw"  # the default user's (requirepass): for the fixture's own checks only
# What the worker needs, found by running it (ACL LOG, checked by the tests, lists anything denied):
# the read model's commands as it sends them and as its Lua scripts call them (Redis checks both),
# EVALSHA and SCRIPT EXISTS/LOAD for redis-py's registered scripts (a pipeline checks and loads
# them first). (redis-py also sends CLIENT SETINFO on connect and ignores a refusal: Debian's Redis 7.0
# does not know the command, so it cannot be in an ACL rule; a 7.2 would refuse it, harmlessly.)
# Keys: the tests' prefixes (`t-...`) and the default `health:` prefix, nothing else.
WORKER_ACL = ("on", f">{PASSWORD}", "resetkeys", "~t-*", "~health:*", "resetchannels", "-@all",
              "+ping", "+hget", "+hset", "+hgetall", "+zadd", "+zrange", "+zrevrange", "+zremrangebyrank",
              "+zrem", "+sadd", "+srem", "+scard", "+evalsha", "+script|load", "+script|exists")
# a user that may sign in but not PING: what a too narrow ACL looks like to the preflight check
LIMITED_USER = "no-ping"
LIMITED_ACL = ("on", f">{PASSWORD}", "~*", "-@all", "+hget")


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not: a client trusting only it must refuse the server
    server_cert: Path
    server_key: Path
    client_cert: Path  # signed by `ca`, for a server that requires client certificates
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


def make_certs(directory: Path) -> Certs:
    """Two CAs, and a server certificate for 127.0.0.1 and localhost and a client certificate signed by the
    first (EC keys: fast)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                 "-subj", f"/CN=health test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=directory)
    _openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=health worker", cwd=directory)
    (directory / "client.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.crt", "-days", "2", "-extfile", "client.ext", cwd=directory)
    return Certs(*(directory / name for name in ("ca.crt", "other-ca.crt", "server.crt", "server.key",
                                                  "client.crt", "client.key")))


def _quote(arg: str) -> str:
    # redis.conf reads double-quoted arguments with backslash escapes: a password with spaces stays one
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class SecureRedis:
    directory: Path
    certs: Certs
    port: int  # plain TCP, same password and ACL: lets tests tell TLS problems from credential ones
    tls_port: int
    client_certificates: bool = False  # tls-auth-clients yes: a TLS client must show a certificate of the CA
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def url(self, *, tls: bool = True, credentials: bool = False, port: int | None = None) -> str:
        """A redis:// or rediss:// URL at 127.0.0.1, with the worker user's credentials in it if asked."""
        from urllib.parse import quote

        auth = f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@" if credentials else ""
        return f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{port or (self.tls_port if tls else self.port)}/0"

    def client(self, *, admin: bool = False) -> redis.Redis:
        """A client over TLS as the worker user (or the default user): how a test reads what the worker wrote."""
        mine = {"ssl_certfile": str(self.certs.client_cert), "ssl_keyfile": str(self.certs.client_key)}
        return redis.Redis(host="127.0.0.1", port=self.tls_port, ssl=True, ssl_ca_certs=str(self.certs.ca),
                           username=None if admin else USER, password=ADMIN_PASSWORD if admin else PASSWORD,
                           decode_responses=True, socket_timeout=5, socket_connect_timeout=5,
                           **(mine if self.client_certificates else {}))

    def denied(self, user: str = USER) -> list[dict]:
        """ACL LOG: the commands and keys refused to `user` since the server started (but CLIENT SETINFO,
        which redis-py sends on connect and does without; and not failed sign-ins, which tests cause)."""
        with self.client(admin=True) as admin:
            return [entry for entry in admin.acl_log() if entry.get("username") == user
                    and entry.get("reason") != "auth" and entry.get("object") != "client|setinfo"]

    def start(self) -> "SecureRedis":
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join([
            "bind 127.0.0.1",
            f"port {self.port}",
            f"tls-port {self.tls_port}",
            f"tls-cert-file {self.certs.server_cert}",
            f"tls-key-file {self.certs.server_key}",
            f"tls-ca-cert-file {self.certs.ca}",
            # by default clients prove themselves with the password alone, as most managed offerings do
            f"tls-auth-clients {'yes' if self.client_certificates else 'no'}",
            f"requirepass {_quote(ADMIN_PASSWORD)}",
            "user " + " ".join(_quote(a) for a in (USER, *WORKER_ACL)),
            "user " + " ".join(_quote(a) for a in (LIMITED_USER, *LIMITED_ACL)),
            'save ""',  # nothing on disk: the server is thrown away with the test
            "appendonly no",
            f"dir {self.directory}",
            f"logfile {self.log_path}",
            "daemonize no",
            "",
        ]))
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, cwd=self.directory)
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_it_answers(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer over TLS in {timeout:g}s ({exc}):\n"
                                       f"{self.log()}") from None
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _serve(directory: Path, client_certificates: bool = False):
    port = free_port()
    tls_port = free_port()
    while tls_port == port:  # each was free when asked; the kernel may hand the same one out twice
        tls_port = free_port()
    server = SecureRedis(directory, make_certs(directory / "certs"), port, tls_port, client_certificates)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory) -> SecureRedis:
    """One secured redis-server per test module (tests keep apart by key prefix), stopped at its end."""
    yield from _serve(tmp_path_factory.mktemp("secure-redis"))


@pytest.fixture
def mutual_tls_redis(tmp_path_factory) -> SecureRedis:
    """A secured redis-server that also requires a client certificate (tls-auth-clients yes)."""
    yield from _serve(tmp_path_factory.mktemp("mtls-redis"), client_certificates=True)
