"""Signed heads: key files, the documented message, signing at every checkpoint, verification."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from abstractruntime.core.errors import InvalidInputError, VerificationFailedError
from abstractruntime.storage.signing import (
    Ed25519Signer,
    generate_keypair,
    head_message,
    load_public_key,
    verify_head_signature,
)
from abstractruntime.storage.verify import verify_run

from prov_helpers import DEMO, checkpoint_path, open_demo, read_checkpoint_doc, read_records, ledger_path, run_demo

SEED = bytes(range(32))
HEAD = "68b7f31c506eeb41c696d2bb11624a397ac0aa3b7cacffc402076d5e3011a29b"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_sign_head_signs_the_documented_message() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    doc = Ed25519Signer(key).sign_head(run_id="run-1", seq=2, head_hash=HEAD)

    literal = b"abstractruntime-head/v1\nrun-1\n2\n" + HEAD.encode()
    assert head_message(run_id="run-1", seq=2, head_hash=HEAD) == literal
    # ed25519 is deterministic: the same key and message give the same signature.
    assert base64.b64decode(doc["sig"]) == key.sign(literal)
    assert doc == {"alg": "ed25519", "key_id": hashlib.sha256(raw_public(key)).hexdigest()[:16],
                   "seq": 2, "head_hash": HEAD, "sig": doc["sig"]}
    key.public_key().verify(base64.b64decode(doc["sig"]), literal)  # raises if it does not verify


def test_empty_ledger_head_signs_an_empty_hash() -> None:
    assert head_message(run_id="r", seq=0, head_hash=None) == b"abstractruntime-head/v1\nr\n0\n"


@pytest.mark.parametrize("kwargs", [
    {"run_id": "a\nb", "seq": 1, "head_hash": HEAD},
    {"run_id": "r", "seq": -1, "head_hash": HEAD},
    {"run_id": "r", "seq": True, "head_hash": HEAD},
    {"run_id": "r", "seq": 1, "head_hash": HEAD.upper()},
    {"run_id": "r", "seq": 1, "head_hash": "abc"},
])
def test_head_message_refuses_ambiguous_fields(kwargs: dict) -> None:
    with pytest.raises(InvalidInputError):
        head_message(**kwargs)


def test_generate_keypair_files_and_permissions(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(pair.private_key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pair.public_key_path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert pair.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pair.public_key_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")

    signer = Ed25519Signer.from_file(pair.private_key_path)
    public = serialization.load_pem_public_key(pair.public_key_path.read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert signer.key_id == pair.key_id == hashlib.sha256(raw).hexdigest()[:16]

    doc = signer.sign_head(run_id="r", seq=3, head_hash=HEAD)
    for source in (pair.public_key_path, str(pair.public_key_path), pair.public_key_path.read_bytes(), raw, public):
        assert verify_head_signature(doc, run_id="r", public_key=source) == doc


def test_generate_keypair_refuses_to_replace_a_key(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path)
    with pytest.raises(InvalidInputError, match="already exists"):
        generate_keypair(tmp_path)
    assert Ed25519Signer.from_file(first.private_key_path).key_id == first.key_id
    second = generate_keypair(tmp_path, overwrite=True)
    assert second.key_id != first.key_id


def test_password_protected_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "k.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    assert Ed25519Signer.from_file(path, password=b"pw").key_id == Ed25519Signer(key).key_id
    with pytest.raises(InvalidInputError):
        Ed25519Signer.from_file(path)
    with pytest.raises(InvalidInputError, match="No private key file"):
        Ed25519Signer.from_file(tmp_path / "missing.pem")


def test_tampered_signature_documents_fail(tmp_path: Path) -> None:
    signer = Ed25519Signer.generate()
    doc = signer.sign_head(run_id="r", seq=3, head_hash=HEAD)
    cases = [
        ({**doc, "seq": 4}, "does not match"),
        ({**doc, "head_hash": "0" * 64}, "does not match"),
        ({**doc, "alg": "rsa"}, "algorithm"),
        ({**doc, "sig": "!!!"}, "malformed"),
        ({**doc, "seq": "3"}, "malformed"),
        ("not a dict", "not a JSON object"),
    ]
    for bad, fragment in cases:
        with pytest.raises(VerificationFailedError, match=fragment):
            verify_head_signature(bad, run_id="r", public_key=signer.public_key)
    with pytest.raises(VerificationFailedError):
        verify_head_signature(doc, run_id="other", public_key=signer.public_key)


def test_every_checkpoint_is_signed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    signer = Ed25519Signer.generate()
    _, runtime = open_demo(root, signer=signer)
    run_id = runtime.start(workflow=DEMO, run_id="signed")
    seen = []
    for step in ("start", "tick", "resume"):
        if step == "tick":
            state = runtime.tick(workflow=DEMO, run_id=run_id)
        elif step == "resume":
            runtime.resume(workflow=DEMO, run_id=run_id, wait_key=state.waiting.wait_key, payload={"answer": "y"})
        doc = read_checkpoint_doc(root, run_id)
        sig = doc["signature"]
        assert (sig["seq"], sig["head_hash"]) == (doc["ledger"]["seq"], doc["ledger"]["head_hash"])
        assert sig["head_hash"] == read_records(ledger_path(root, run_id))[sig["seq"] - 1]["record_hash"]
        report = verify_run(root, run_id, public_key=signer.public_key_pem())
        assert report.ok and report.signature == "valid" and report.signature_key_id == signer.key_id
        seen.append(sig["seq"])
    assert seen == sorted(seen) and len(set(seen)) == 3


def test_unsigned_run_with_a_key_and_signed_run_without_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _, plain_rt = open_demo(root)
    run_demo(plain_rt, "plain")
    signer = Ed25519Signer.generate()
    _, signed_rt = open_demo(root, signer=signer)
    run_demo(signed_rt, "signed")

    unsigned = verify_run(root, "plain", public_key=signer.public_key)
    assert [p.type for p in unsigned.problems] == ["signature_missing"]
    assert verify_run(root, "plain").signature == "absent"

    unchecked = verify_run(root, "signed")
    assert unchecked.ok and unchecked.signature == "unchecked"
    assert "signature_unchecked" in {n.type for n in unchecked.notes}

    other = Ed25519Signer.generate()
    wrong_key = verify_run(root, "signed", public_key=other.public_key)
    assert [p.type for p in wrong_key.problems] == ["signature_invalid"]


def test_missing_cryptography_names_the_extra(tmp_path: Path) -> None:
    root = tmp_path / "store"
    signer = Ed25519Signer.generate()
    _, runtime = open_demo(root, signer=signer)
    run_demo(runtime, "signed")
    script = f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cryptography" or name.startswith("cryptography."):
            raise ImportError("blocked for this test")
sys.meta_path.insert(0, Block())
from abstractruntime.core.errors import MissingExtraError
from abstractruntime.storage.signing import Ed25519Signer
from abstractruntime.storage.verify import verify_run
report = verify_run({str(root)!r}, "signed")          # no key: no cryptography needed
out = {{"ok": report.ok, "signature": report.signature}}
for call in (Ed25519Signer.generate, lambda: verify_run({str(root)!r}, "signed", public_key=b"x" * 32)):
    try:
        call()
    except MissingExtraError as exc:
        out.setdefault("errors", []).append([exc.code, str(exc)])
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["signature"] == "unchecked"
    assert len(out["errors"]) == 2
    for code, message in out["errors"]:
        assert code == "missing_extra"
        assert "pip install -e '.[signing]'" in message and "cryptography" in message


def test_checkpoint_signature_survives_a_reload(tmp_path: Path) -> None:
    # The signature is part of run.json: another process (a fresh store) still verifies it.
    root = tmp_path / "store"
    pair = generate_keypair(tmp_path / "keys")
    _, runtime = open_demo(root, signer=Ed25519Signer.from_file(pair.private_key_path))
    run_demo(runtime, "r1")
    assert json.loads(checkpoint_path(root, "r1").read_bytes())["signature"]["key_id"] == pair.key_id
    assert verify_run(root, "r1", public_key=pair.public_key_path).signature == "valid"


def test_load_public_key_refuses_other_things(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(InvalidInputError):
        load_public_key(12345)
    with pytest.raises(InvalidInputError, match="No public key file"):
        load_public_key(tmp_path / "nope.pub")
