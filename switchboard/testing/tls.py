"""Throwaway TLS material for tests: a CA, a server and a client certificate.

Made with the ``openssl`` command line (present wherever ``redis-server`` is
built with TLS), EC P-256 keys so it takes milliseconds, valid for a day. The
server certificate names ``127.0.0.1`` and ``localhost``, so hostname checks
stay on. Extensions are spelled out because Python's default context
verifies strictly (CA basic constraints, key identifiers).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import trio


class CertificateError(RuntimeError):
    """``openssl`` is missing or refused to make the test certificates."""


@dataclass(frozen=True, slots=True)
class TestCertificates:
    """Paths of the files made by ``make_certificates``."""

    __test__ = False  # a dataclass, not a pytest test class

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = IP:127.0.0.1, DNS:localhost
"""

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


async def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertificateError("openssl is not on PATH")
    result = await trio.run_process(
        [binary, *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
    )
    if result.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed: {result.stderr.decode()[-500:]}")


async def _leaf(directory: Path, name: str, usage: str) -> None:
    ext = directory / f"{name}.ext"
    ext.write_text(_LEAF_EXTENSIONS.format(usage=usage))
    await _openssl(
        "req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN=switchboard-test-{name}", cwd=directory,
    )  # fmt: skip
    await _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", ext.name,
        cwd=directory,
    )  # fmt: skip


async def make_certificates(directory: Path) -> TestCertificates:
    """Write a fresh CA and a server and a client certificate into ``directory``."""
    await _openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=switchboard-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    # Nodes of a TLS cluster and replicas also connect to each other with it.
    await _leaf(directory, "server", "serverAuth, clientAuth")
    await _leaf(directory, "client", "clientAuth")
    return TestCertificates(
        ca_file=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
