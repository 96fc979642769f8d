"""``scaffold certs create``: a local CA plus server (and client) certificates for TLS and mTLS.

Built with the ``cryptography`` library (no openssl binary). Keys are ECDSA P-256 and are
written with mode 0600; certificates carry the subject alternative names gRPC checks.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from generator.errors import ConflictError, UsageError
from generator.writer import FileOwner, Outcome, Plan, write


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scaffold local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sans(hosts: list[str]):
    from cryptography import x509

    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _validity(not_before: datetime.datetime | None, days: int) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return start, start + datetime.timedelta(days=days)


def make_ca(days: int = 3650, not_before: datetime.datetime | None = None) -> tuple[Issued, object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = _key()
    start, end = _validity(not_before, days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("scaffold local CA"))
        .issuer_name(_name("scaffold local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)), cert, key


def issue(ca_cert, ca_key, common_name: str, hosts: list[str], *, client: bool = False, days: int = 825,
          not_before: datetime.datetime | None = None) -> Issued:
    """A leaf certificate signed by the CA: for a server (hosts as SANs) or a client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _key()
    start, end = _validity(not_before, days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
    )
    if hosts:
        builder = builder.add_extension(_sans(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def create(out: Path, hosts: list[str], *, client: bool = False, days: int = 825, force: bool = False) -> list[Outcome]:
    """Write ca.pem/ca.key, server.pem/server.key (and client.pem/client.key) into ``out``."""
    hosts = [h.strip() for h in hosts if h.strip()]
    if not hosts:
        raise UsageError("--hosts needs at least one host name or IP address (e.g. localhost,127.0.0.1)")
    if days < 1:
        raise UsageError("--days must be 1 or more")
    names = ["ca.pem", "ca.key", "server.pem", "server.key"] + (["client.pem", "client.key"] if client else [])
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise ConflictError(f"{out} already has {', '.join(existing)}", hint="pass --force to replace them")
    ca, ca_cert, ca_key = make_ca(days=max(days, 3650))
    server = issue(ca_cert, ca_key, hosts[0], hosts, days=days)
    plan = Plan()
    plan.add("ca.pem", ca.cert_pem.decode(), FileOwner.GENERATED)
    plan.add("ca.key", ca.key_pem.decode(), FileOwner.GENERATED, private=True)
    plan.add("server.pem", server.cert_pem.decode(), FileOwner.GENERATED)
    plan.add("server.key", server.key_pem.decode(), FileOwner.GENERATED, private=True)
    if client:
        c = issue(ca_cert, ca_key, "scaffold client", [], client=True, days=days)
        plan.add("client.pem", c.cert_pem.decode(), FileOwner.GENERATED)
        plan.add("client.key", c.key_pem.decode(), FileOwner.GENERATED, private=True)
    return write(out, plan)
