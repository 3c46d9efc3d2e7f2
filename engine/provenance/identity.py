"""The signing identity: who signs the Content Credentials of a render.

Where it comes from, first found wins:

1. ``DOUBLURE_SIGNING_CERT`` and ``DOUBLURE_SIGNING_KEY``: paths to the studio's PEM certificate chain (the
   signing certificate first, then its issuers) and PEM private key; ``DOUBLURE_TRUST_ANCHORS`` optionally names
   the PEM root certificates ``doublure verify`` trusts.
2. ``signing.json`` in the user's Doublure config folder (``$DOUBLURE_CONFIG_DIR``, else
   ``$XDG_CONFIG_HOME/doublure``, else ``~/.config/doublure``): ``{"certificate": path, "key": path,
   "trust_anchors": path}``, paths relative to that file.
3. Otherwise a **test identity**, made on first use in ``<config>/test-identity/``: a local test CA and a
   leaf certificate it issued (P-256, with subject and authority key identifiers, email-protection use, as C2PA
   validators ask), the key readable by the user only. Every manifest signed with it says it is a test identity.

Never a key in the repository: the test identity is made on each machine, in the user's folder.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import threading

from ..errors import DoublureError

TEST_ORGANISATION = "Doublure TEST identity (not a studio)"
_TEST_LOCK = threading.Lock()


class SigningError(DoublureError):
    """A certificate or key that cannot sign: the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain and key to sign with.

    Attributes:
        chain_pem: PEM certificates, the signing certificate first.
        key_pem: PEM private key of the signing certificate.
        algorithm: the C2PA signing algorithm for the key (``es256``, ``es384``, ``ps256``, ``ed25519``).
        is_test: a local test identity (no studio's): manifests say so.
        source: where it came from, for messages (a path or an environment variable).
        trust_anchors_pem: PEM roots a verifier on this machine trusts (the test CA for a test identity).
    """

    chain_pem: bytes
    key_pem: bytes
    algorithm: str
    is_test: bool
    source: str
    trust_anchors_pem: bytes = b""

    @functools.cached_property
    def subject(self) -> str:
        """The signing certificate's subject, as RFC 4514 text."""
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.chain_pem).subject.rfc4514_string()


def config_dir() -> str:
    """The user's Doublure config folder (not created here)."""
    if os.environ.get("DOUBLURE_CONFIG_DIR"):
        return os.environ["DOUBLURE_CONFIG_DIR"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "doublure")


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise SigningError(f"signing {what} {path}: cannot read it ({exc.strerror or exc})") from None


def identity_from_files(cert_path: str, key_path: str, anchors_path: str | None = None, *,
                        is_test: bool = False, source: str | None = None) -> SigningIdentity:
    """Load and check a certificate chain and key.

    Raises:
        SigningError: naming the file: not PEM, no certificate, a key that does not match the certificate,
            a certificate out of its validity dates, or a key type C2PA cannot sign with.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    chain = _read(cert_path, "certificate")
    key_pem = _read(key_path, "key")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise SigningError(f"signing certificate {cert_path}: not a PEM certificate chain") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {key_path}: not an unencrypted PEM private key ({exc})") from None
    leaf = certs[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise SigningError(f"signing key {key_path} does not belong to the certificate {cert_path}")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise SigningError(f"signing certificate {cert_path} is valid from {leaf.not_valid_before_utc:%Y-%m-%d} "
                           f"to {leaf.not_valid_after_utc:%Y-%m-%d}, not today")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        algorithm = "ps256"
    else:
        algorithm = None
    if algorithm is None:
        raise SigningError(f"signing key {key_path}: a {type(key).__name__} cannot sign C2PA manifests "
                           "(use EC P-256/384/521, Ed25519 or RSA)")
    anchors = _read(anchors_path, "trust anchors") if anchors_path else b""
    return SigningIdentity(chain, key_pem, algorithm, is_test, source or cert_path, anchors)


def load_identity() -> SigningIdentity:
    """The identity to sign with (see the module's notes): the studio's, or the local test identity."""
    cert, key = os.environ.get("DOUBLURE_SIGNING_CERT"), os.environ.get("DOUBLURE_SIGNING_KEY")
    if cert or key:
        if not (cert and key):
            raise SigningError("set both DOUBLURE_SIGNING_CERT and DOUBLURE_SIGNING_KEY (the certificate chain "
                               "and its key), or neither")
        return identity_from_files(cert, key, os.environ.get("DOUBLURE_TRUST_ANCHORS"),
                                   source="DOUBLURE_SIGNING_CERT")
    settings = os.path.join(config_dir(), "signing.json")
    if os.path.exists(settings):
        try:
            with open(settings, encoding="utf-8") as f:
                conf = json.load(f)
            here = os.path.dirname(settings)
            paths = [os.path.join(here, os.path.expanduser(conf[k])) if conf.get(k) else None
                     for k in ("certificate", "key", "trust_anchors")]
        except (OSError, ValueError, AttributeError) as exc:
            raise SigningError(f"signing settings {settings}: not a JSON object ({exc})") from None
        if not (paths[0] and paths[1]):
            raise SigningError(f"signing settings {settings}: give both \"certificate\" and \"key\"")
        return identity_from_files(paths[0], paths[1], paths[2], source=settings)
    return local_test_identity()


def trust_anchors() -> bytes:
    """The PEM roots this machine's verifier trusts: ``DOUBLURE_TRUST_ANCHORS``, the signing settings'
    ``trust_anchors``, and the local test CA where one was made (a file it signed shows as trusted here, and as
    a test identity everywhere). Creates nothing."""
    found = []
    if os.environ.get("DOUBLURE_TRUST_ANCHORS"):
        found.append(_read(os.environ["DOUBLURE_TRUST_ANCHORS"], "trust anchors"))
    settings = os.path.join(config_dir(), "signing.json")
    if os.path.exists(settings):
        try:
            with open(settings, encoding="utf-8") as f:
                anchors = json.load(f).get("trust_anchors")
        except (OSError, ValueError, AttributeError) as exc:
            raise SigningError(f"signing settings {settings}: not a JSON object ({exc})") from None
        if anchors:
            found.append(_read(os.path.join(os.path.dirname(settings), os.path.expanduser(anchors)), "trust anchors"))
    test_ca = os.path.join(config_dir(), "test-identity", "ca.pem")
    if os.path.exists(test_ca):
        found.append(_read(test_ca, "test CA"))
    return b"".join(found)


def local_test_identity() -> SigningIdentity:
    """The local test identity, made on first use in ``<config>/test-identity/`` (see the module's notes)."""
    folder = os.path.join(config_dir(), "test-identity")
    paths = {name: os.path.join(folder, name) for name in ("chain.pem", "key.pem", "ca.pem")}
    with _TEST_LOCK:
        if not all(os.path.exists(p) for p in paths.values()):
            _make_test_identity(paths)
    return identity_from_files(paths["chain.pem"], paths["key.pem"], paths["ca.pem"], is_test=True,
                               source=folder)


def _make_test_identity(paths: dict[str, str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORGANISATION)])

    def usage(**on: bool) -> x509.KeyUsage:
        fields = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                  "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{f: on.get(f, False) for f in fields})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Doublure local test CA")).issuer_name(name("Doublure local test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    user = os.environ.get("USER") or "user"
    leaf = (x509.CertificateBuilder().subject_name(name(f"Doublure test signer ({user})")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    os.makedirs(os.path.dirname(paths["key.pem"]), exist_ok=True)
    # The CA's key is not kept: the test CA issues this one certificate and nothing else.
    files = {"key.pem": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
             "chain.pem": leaf.public_bytes(pem) + ca.public_bytes(pem), "ca.pem": ca.public_bytes(pem)}
    for name_, data in files.items():
        # written beside and renamed (a half-written key never loads); certificates as the umask says, the
        # key for the user alone
        tmp = f"{paths[name_]}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if name_ == "key.pem" else 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, paths[name_])
