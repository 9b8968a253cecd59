"""Signed ledger heads: ed25519 signatures over (run, seq, head hash), needs the ``[signing]`` extra.

A hash chain proves that records were not changed *relative to each other*; it cannot prove
that nobody rewrote the whole chain. A signature by a key the writer alone holds can: with
``Runtime(signer=Ed25519Signer.from_file(path))`` the last record of every batch the runtime
appends carries a signature of itself as the ledger's head, and
:func:`abstractruntime.storage.verify.verify_run` checks it with the public key (following the
key rotations the ledger records; docs/provenance.md, "Keys over months").

The signed message is fixed and documented (docs/provenance.md)::

    b"abstractruntime-head/v1\\n" + run_id + b"\\n" + str(seq) + b"\\n" + head_hash

(ASCII; ``head_hash`` is the 64 lower-case hex digits of the head record's hash, or the empty
string for an empty ledger). The signature document, in the record's ``signature`` field (a
copy in ``run.json`` is for display), is ``{"alg": "ed25519", "key_id", "seq", "head_hash",
"sig"}`` with ``sig`` in standard base64 and ``key_id`` the first 16 hex digits of SHA-256 of
the 32-byte raw public key.

``cryptography`` is imported only when a key is loaded or a signature checked; without it
those calls raise :class:`~abstractruntime.core.errors.MissingExtraError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from ..core.fastclass import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.canonical import is_sha256_hex
from ..core.errors import InvalidInputError, MissingExtraError, StorageError, VerificationFailedError
from .fsio import atomic_write_bytes, ensure_dir, read_bytes, validate_id

HEAD_MESSAGE_PREFIX = b"abstractruntime-head/v1\n"
SIGNATURE_ALG = "ed25519"
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
KEY_ID_HEX_CHARS = 16

# A path to a PEM file, PEM bytes, 32 raw bytes, or a cryptography key / Ed25519Signer.
PublicKeySource = Any


def _ed25519(purpose: str) -> Any:
    """The ``cryptography`` ed25519 module, or :class:`MissingExtraError` saying which extra to install."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtraError("cryptography", "signing", purpose) from exc
    return ed25519


def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def head_message(*, run_id: str, seq: int, head_hash: Optional[str]) -> bytes:
    """The exact bytes that are signed for a ledger head (see the module docstring)."""
    validate_id(run_id, "run id")  # ids cannot contain a newline, so the fields cannot run together
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidInputError(f"Ledger seq must be a non-negative integer, not {seq!r}")
    if head_hash is not None and not is_sha256_hex(head_hash):
        raise InvalidInputError(f"Head hash must be 64 lower-case hex digits, not {head_hash!r}")
    return HEAD_MESSAGE_PREFIX + f"{run_id}\n{seq}\n{head_hash or ''}".encode("ascii")


def key_id_of(public_key: Any) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte ed25519 public key."""
    ser = _serialization()
    raw = public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


class Ed25519Signer:
    """Signs ledger heads with an ed25519 private key; pass it as ``Runtime(signer=...)``."""

    def __init__(self, private_key: Any) -> None:
        ed25519 = _ed25519("Signing ledger heads")
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise InvalidInputError(f"Expected an ed25519 private key, not {type(private_key).__name__}")
        self._key = private_key
        self.key_id = key_id_of(private_key.public_key())

    @classmethod
    def generate(cls) -> "Ed25519Signer":
        """A signer with a fresh key held only in memory (tests, short-lived demos)."""
        return cls(_ed25519("Signing ledger heads").Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, *, password: Optional[bytes] = None) -> "Ed25519Signer":
        """A signer from PEM (PKCS#8) bytes, optionally password-protected."""
        _ed25519("Signing ledger heads")
        try:
            key = _serialization().load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"Not a usable PEM private key: {exc}") from exc
        return cls(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, password: Optional[bytes] = None) -> "Ed25519Signer":
        """A signer from a PEM private key file (as written by :func:`generate_keypair`)."""
        try:
            data = read_bytes(Path(path))
        except FileNotFoundError:
            raise InvalidInputError(f"No private key file at {path}") from None
        return cls.from_pem(data, password=password)

    @property
    def public_key(self) -> Any:
        """The matching ``Ed25519PublicKey``."""
        return self._key.public_key()

    def public_key_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo), to hand to verifiers."""
        ser = _serialization()
        pem: bytes = self.public_key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        return pem

    def sign_head(self, *, run_id: str, seq: int, head_hash: Optional[str]) -> dict[str, Any]:
        """The signature document of one head: ``{"alg", "key_id", "seq", "head_hash", "sig"}``."""
        sig = self._key.sign(head_message(run_id=run_id, seq=seq, head_hash=head_hash))
        return {
            "alg": SIGNATURE_ALG,
            "key_id": self.key_id,
            "seq": seq,
            "head_hash": head_hash,
            "sig": base64.b64encode(sig).decode("ascii"),
        }


    def verify_head(self, signature: Any, *, run_id: str) -> dict[str, Any]:
        """Check a signature document against this signer's public key (see :func:`verify_head_signature`)."""
        return verify_head_signature(signature, run_id=run_id, public_key=self)


@dataclass(frozen=True)
class KeyPair:
    """Where :func:`generate_keypair` wrote the keys, and the key's id."""

    private_key_path: Path
    public_key_path: Path
    key_id: str


def generate_keypair(directory: str | os.PathLike[str], *, overwrite: bool = False) -> KeyPair:
    """Create an ed25519 key pair as ``signing.key`` (PEM PKCS#8, mode 0600) and ``signing.pub``.

    ``directory`` is created (0700) if needed. Existing key files are refused unless
    ``overwrite=True``: replacing a key silently would orphan every head it signed.
    """
    signer = Ed25519Signer.generate()
    folder = ensure_dir(Path(directory))
    private_path, public_path = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists() or path.is_symlink():
                raise InvalidInputError(f"{path} already exists; pass overwrite=True to replace the key pair")
    ser = _serialization()
    private_pem = signer._key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    atomic_write_bytes(private_path, private_pem)  # written 0600 from the start, never wider
    atomic_write_bytes(public_path, signer.public_key_pem())
    try:
        os.chmod(public_path, 0o644)  # a public key is meant to be shared
    except OSError as exc:
        raise StorageError(f"Cannot set permissions of {public_path}: {exc.strerror or exc}") from exc
    return KeyPair(private_path, public_path, signer.key_id)


def load_public_key(source: PublicKeySource) -> Any:
    """An ``Ed25519PublicKey`` from a key object, PEM bytes, 32 raw bytes, or a PEM file path."""
    ed25519 = _ed25519("Verifying ledger head signatures")
    if isinstance(source, ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source.public_key()
    if isinstance(source, Ed25519Signer):
        return source.public_key
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, (str, os.PathLike)):
        try:
            data = read_bytes(Path(source))
        except FileNotFoundError:
            raise InvalidInputError(f"No public key file at {source}") from None
    else:
        raise InvalidInputError(f"Cannot use a {type(source).__name__} as a public key")
    if len(data) == 32:
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    try:
        key = _serialization().load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"Not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInputError(f"Expected an ed25519 public key, not {type(key).__name__}")
    return key


def public_key_pem(public_key: Any) -> str:
    """An ed25519 public key as PEM text (SubjectPublicKeyInfo), as a rotation record carries it."""
    ser = _serialization()
    pem: bytes = load_public_key(public_key).public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _is_key_list(source: Any) -> bool:
    return isinstance(source, (list, tuple, set, frozenset))


def load_keyring(source: Any) -> dict[str, Any]:
    """The public keys an auditor gives, by key id: one key (any :func:`load_public_key` source), a
    list of them, or a directory, whose ``*.pub`` and ``*.pem`` files that hold a public key count
    (private keys and other files beside them are left out). Raises :class:`InvalidInputError`
    for a source that holds no public key."""
    ring: dict[str, Any] = {}
    for item in (source if _is_key_list(source) else [source]):
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            found = 0
            for path in sorted(Path(item).iterdir()):
                if path.suffix not in (".pub", ".pem") or not path.is_file():
                    continue
                try:
                    key = load_public_key(path)
                except InvalidInputError:
                    continue  # a private key or another PEM kept beside the public ones
                ring[key_id_of(key)] = key
                found += 1
            if not found:
                raise InvalidInputError(f"No ed25519 public key (*.pub, *.pem) in directory {item}")
            continue
        key = load_public_key(item)
        ring[key_id_of(key)] = key
    if not ring:
        raise InvalidInputError("No public key given")
    return ring


def verify_head_signature(signature: Any, *, run_id: str, public_key: PublicKeySource) -> dict[str, Any]:
    """Check a signature document against ``public_key``; returns it, raises if it does not verify.

    Raises :class:`VerificationFailedError` (with a one-line reason) for a malformed document,
    another algorithm, a different key id or a signature that does not match.
    """
    key = load_public_key(public_key)
    from cryptography.exceptions import InvalidSignature

    if not isinstance(signature, dict):
        raise VerificationFailedError("signature is not a JSON object")
    if signature.get("alg") != SIGNATURE_ALG:
        raise VerificationFailedError(f"signature algorithm {signature.get('alg')!r} is not {SIGNATURE_ALG!r}")
    expected_id = key_id_of(key)
    if signature.get("key_id") != expected_id:
        raise VerificationFailedError(
            f"signed by key {signature.get('key_id')!r}, but the public key given is {expected_id!r}")
    try:
        signed_seq: Any = signature.get("seq")  # head_message refuses a non-integer
        message = head_message(run_id=run_id, seq=signed_seq, head_hash=signature.get("head_hash"))
        sig = base64.b64decode(str(signature.get("sig")), validate=True)
    except (InvalidInputError, binascii.Error, ValueError) as exc:
        raise VerificationFailedError(f"signature document is malformed ({exc})") from exc
    try:
        key.verify(sig, message)
    except InvalidSignature:
        raise VerificationFailedError("signature does not match the signed head (forged or altered)") from None
    return signature


__all__ = [
    "HEAD_MESSAGE_PREFIX",
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "Ed25519Signer",
    "KeyPair",
    "generate_keypair",
    "head_message",
    "key_id_of",
    "load_keyring",
    "load_public_key",
    "public_key_pem",
    "verify_head_signature",
]
