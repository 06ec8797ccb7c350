"""docs/FORMAT.md against the code: its test vectors, examples and decoder must match exactly.

Every value is read from the document itself (the blocks marked `<!-- vector: NAME -->`), so if
the document and the code ever disagree, one of these tests fails.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from permafrost import errors, layout
from permafrost.config.settings import Settings
from permafrost.repo import config as repository
from permafrost.repo import crypto, keys, manifest, pipeline
from permafrost.storage.local import LocalStorage

DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"
_BLOCK = re.compile(r"^<!-- vector: (\S+) -->\n```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
VECTORS = ("v1", "v2", "v3")


def _read_blocks() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        name, body = match.groups()
        assert name not in found, f"docs/FORMAT.md has two blocks named {name}"
        found[name] = body.removesuffix("\n")
    return found


BLOCKS = _read_blocks()


def block(name: str) -> str:
    assert name in BLOCKS, f"docs/FORMAT.md has no block `<!-- vector: {name} -->`"
    return BLOCKS[name]


def hex_lines(name: str) -> list[tuple[bytes, str]]:
    """The bytes of each line of a hex block, with the description after its `#`."""
    lines = []
    for line in block(name).splitlines():
        digits, _, note = line.partition("#")
        lines.append((bytes.fromhex("".join(digits.split())), note.strip()))
    return lines


def hex_block(name: str) -> bytes:
    return b"".join(data for data, _ in hex_lines(name))


def inputs(name: str) -> dict[str, str]:
    values = {}
    for line in block(name).splitlines():
        key, sep, value = line.partition("=")
        assert sep, f"line {line!r} of block {name} is not `name = value`"
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Vector:
    name: str
    inputs: dict[str, str]
    header: bytes
    chunks: list[bytes]
    nonces: list[bytes]

    @property
    def object(self) -> bytes:
        return self.header + b"".join(self.chunks)

    @property
    def payload(self) -> bytes:
        return bytes.fromhex(self.inputs.get("payload", self.inputs["plaintext"]))

    @property
    def plaintext(self) -> bytes:
        return bytes.fromhex(self.inputs["plaintext"])

    @property
    def compressed(self) -> bool:
        return bool(int(self.inputs["compressed"]))

    def encryptor(self) -> crypto.Encryptor:
        return crypto.Encryptor(
            MASTER,
            compressed=self.compressed,
            chunk_size=int(self.inputs["chunk_size"]),
            data_key=bytes.fromhex(self.inputs["data_key"]),
            nonce_prefix=bytes.fromhex(self.inputs["nonce_prefix"]),
            wrap_nonce=bytes.fromhex(self.inputs["wrap_nonce"]),
        )


def vector(name: str) -> Vector:
    chunks = []
    while f"{name}.chunk{len(chunks)}" in BLOCKS:
        chunks.append(hex_block(f"{name}.chunk{len(chunks)}"))
    nonces = [data for data, _ in hex_lines(f"{name}.nonces")]
    return Vector(name, inputs(f"{name}.inputs"), hex_block(f"{name}.header"), chunks, nonces)


MASTER_INPUTS = inputs("master.inputs")
MASTER = crypto.MasterKey(bytes.fromhex(MASTER_INPUTS["master_key"]))
KEYRING = crypto.Keyring(MASTER)


# --- the encrypted object ----------------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS)
def test_it_encrypts_the_documented_inputs_to_the_documented_bytes(name: str) -> None:
    v = vector(name)
    assert v.chunks, f"vector {name} documents no chunks"
    enc = v.encryptor()
    produced = enc.update(v.payload) + enc.finish()
    assert enc.header.to_bytes() == v.header
    assert produced == v.object
    assert len(produced) == int(v.inputs["object_length"])

    # Fed one byte at a time, the encryptor writes the same bytes.
    enc = v.encryptor()
    streamed = b"".join(enc.update(v.payload[i : i + 1]) for i in range(len(v.payload)))
    assert streamed + enc.finish() == v.object


@pytest.mark.parametrize("name", VECTORS)
def test_it_decrypts_the_documented_bytes_to_the_documented_plaintext(name: str) -> None:
    v = vector(name)
    header, payload = crypto.decrypt_bytes(KEYRING, v.object)
    assert payload == v.payload
    assert header.key_id == MASTER_INPUTS["key_id"]
    assert header.compressed == v.compressed
    assert header.flags == (crypto.FLAG_ZSTD if v.compressed else 0)
    assert header.chunk_size == int(v.inputs["chunk_size"])
    assert header.nonce_prefix == bytes.fromhex(v.inputs["nonce_prefix"])
    assert header.wrap_nonce == bytes.fromhex(v.inputs["wrap_nonce"])
    assert pipeline.open_bytes(KEYRING, v.object) == v.plaintext
    if "plaintext_ascii" in v.inputs:
        assert v.inputs["plaintext_ascii"].encode("ascii") == v.plaintext

    # Read one byte at a time, the decryptor returns the same payload.
    dec = crypto.Decryptor(KEYRING)
    pieces = [dec.update(v.object[i : i + 1]) for i in range(len(v.object))]
    assert b"".join(pieces) + dec.finish() == v.payload


@pytest.mark.parametrize("name", VECTORS)
def test_it_derives_the_documented_chunk_nonces(name: str) -> None:
    v = vector(name)
    prefix = bytes.fromhex(v.inputs["nonce_prefix"])
    assert len(v.nonces) == len(v.chunks)
    for index, nonce in enumerate(v.nonces):
        assert crypto.chunk_nonce(prefix, index, index == len(v.chunks) - 1) == nonce


@pytest.mark.parametrize("name", VECTORS)
def test_it_labels_the_documented_offsets_correctly(name: str) -> None:
    blocks = [f"{name}.header"] + [f"{name}.chunk{i}" for i in range(len(vector(name).chunks))]
    offset = 0
    for block_name in blocks:
        for data, note in hex_lines(block_name):
            label = re.match(r"\[(\d+)\]", note)
            if label:
                assert int(label.group(1)) == offset, f"{block_name}: {note}"
            offset += len(data)


@pytest.mark.parametrize("name", VECTORS)
def test_it_documents_chunks_of_the_documented_sizes(name: str) -> None:
    v = vector(name)
    size = int(v.inputs["chunk_size"])
    *full, last = v.chunks
    assert all(len(chunk) == size + crypto.TAG for chunk in full)
    assert crypto.TAG <= len(last) <= size + crypto.TAG
    assert len(v.chunks) == max(1, -(-len(v.payload) // size))


def test_it_derives_the_documented_key_id() -> None:
    key = bytes.fromhex(MASTER_INPUTS["master_key"])
    assert MASTER.key_id == MASTER_INPUTS["key_id"]
    digest = hmac.new(key, b"permafrost key id v1", hashlib.sha256).hexdigest()
    assert digest == MASTER_INPUTS["key_id_hmac"]
    assert digest[:16] == MASTER_INPUTS["key_id"]
    assert MASTER.subkey(b"permafrost manifest v1").hex() == MASTER_INPUTS["manifest_subkey"]
    assert base64.b64decode(MASTER_INPUTS["master_key_base64"]) == key
    assert crypto.raw_key(MASTER_INPUTS["master_key_base64"]) == key
    for name in VECTORS:
        assert vector(name).header[7:23] == MASTER.key_id.encode("ascii")


def test_it_rejects_every_single_bit_flip_of_vector_1() -> None:
    data = vector("v1").object
    key_id_end = 7 + data[6]
    surprises = []
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            crypto.decrypt_bytes(KEYRING, bytes(damaged))
        except errors.IntegrityError:
            continue
        except errors.WrongKey:
            if 6 <= bit // 8 < key_id_end:
                continue
            surprises.append((bit, "WrongKey"))
        else:
            surprises.append((bit, "accepted"))
    assert surprises == []


def _damage_cases() -> list[str]:
    return [line for line in block("damage").splitlines() if line.strip()]


def _damaged(v: Vector, operation: str, args: list[str]) -> bytes:
    chunks = list(v.chunks)
    if operation == "flip-bit":
        data = bytearray(v.object)
        bit = int(args[0])
        data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)
    if operation == "drop-chunk":
        del chunks[int(args[0])]
    elif operation == "duplicate-chunk":
        index = int(args[0])
        chunks.insert(index + 1, chunks[index])
    elif operation == "swap-chunks":
        i, j = int(args[0]), int(args[1])
        chunks[i], chunks[j] = chunks[j], chunks[i]
    elif operation == "cut":
        return v.object[: len(v.object) - int(args[0])]
    elif operation == "append":
        return v.object + bytes(int(args[0]))
    elif operation == "header-of":
        return vector(args[0]).header + b"".join(chunks)
    else:
        raise AssertionError(f"unknown operation {operation!r} in the damage block")
    return v.header + b"".join(chunks)


@pytest.mark.parametrize("case", _damage_cases())
def test_it_reports_the_documented_damage(case: str) -> None:
    left, arrow, right = case.partition("->")
    assert arrow, f"damage line {case!r} has no `->`"
    name, operation, *args = left.split()
    expected = getattr(errors, right.split("#")[0].strip())
    damaged = _damaged(vector(name), operation, args)
    with pytest.raises(errors.PermafrostError) as caught:
        crypto.decrypt_bytes(KEYRING, damaged)
    assert type(caught.value) is expected, caught.value


def _documented_decoder() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(block("decoder.py"), f"{DOC}:decoder.py", "exec"), namespace)
    return namespace["decode"]


@pytest.mark.parametrize("name", VECTORS)
def test_it_decodes_the_vectors_with_the_documented_decoder(name: str) -> None:
    decode = _documented_decoder()
    v = vector(name)
    flags, payload = decode(v.object, MASTER.key)
    assert payload == v.payload
    assert bool(flags & 0x01) == v.compressed
    if v.compressed:
        stream = zstandard.ZstdDecompressor().decompressobj()
        assert stream.decompress(payload) == v.plaintext
        assert stream.eof
    for bit in range(0, len(v.object) * 8, 7):
        damaged = bytearray(v.object)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do
            decode(bytes(damaged), MASTER.key)


def test_it_uses_the_constants_the_document_states() -> None:
    assert crypto.MAGIC == b"PFE1"
    assert crypto.VERSION == 1
    assert crypto.FLAG_ZSTD == 0x01
    assert crypto.TAG == 16
    assert crypto.PREFIX_LEN == 7
    assert crypto.WRAP_NONCE_LEN == 12
    assert crypto.WRAPPED_KEY_LEN == 48
    assert crypto.MAX_KEY_ID == 64
    assert crypto.CHUNK_SIZE == 1048576
    assert crypto.header_length(vector("v1").header) == 94 == 78 + 16
    assert struct.pack(">IB", 2, 1) == bytes.fromhex("0000000201")


# --- keys and permafrost.json ------------------------------------------------------------


def test_it_checks_the_documented_key_check() -> None:
    values = inputs("keycheck.inputs")
    nonce = bytes.fromhex(values["nonce"])
    sealed = AESGCM(MASTER.key).encrypt(nonce, b"permafrost key check v1", MASTER.key_id.encode())
    assert base64.b64encode(nonce + sealed).decode() == values["check"]
    assert crypto.key_check_passes(MASTER, values["check"])
    assert not crypto.key_check_passes(crypto.MasterKey(bytes(32)), values["check"])

    made = base64.b64decode(crypto.key_check(MASTER))
    assert len(made) == 51
    opened = AESGCM(MASTER.key).decrypt(made[:12], made[12:], MASTER.key_id.encode())
    assert opened == b"permafrost key check v1"


def test_it_derives_a_passphrase_key_with_the_documented_scrypt() -> None:
    values = inputs("scrypt.inputs")
    salt = base64.b64decode(values["salt_base64"])
    n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
    assert {"n": n, "r": r, "p": p} == repository.SCRYPT
    key = crypto.stretch(values["passphrase"], salt, n, r, p)
    assert key.key.hex() == values["master_key"]
    assert key.key_id == values["key_id"]

    settings = Settings.from_env({"BACKUP_ENCRYPTION_KEY": values["passphrase"]})
    config = {"kdf": {"name": "scrypt", "salt": values["salt_base64"], "n": n, "r": r, "p": p}}
    assert repository.load_keys(settings, config).current.key.hex() == values["master_key"]
    assert len(values["passphrase"]) >= repository.MIN_PASSPHRASE


def test_it_recognises_the_documented_base64_key() -> None:
    settings = Settings.from_env({"BACKUP_ENCRYPTION_KEY": MASTER_INPUTS["master_key_base64"]})
    assert repository.load_keys(settings, None).current == MASTER
    urlsafe = base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode()
    assert crypto.raw_key(urlsafe) is None  # not the standard alphabet: a passphrase
    assert crypto.raw_key(MASTER_INPUTS["master_key_base64"].rstrip("=")) is None


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


def _repo_settings(root: Path, key: str, old: str = "") -> Settings:
    env = {"BACKUP_ENCRYPTION_KEY": key, "STORAGE_URL": f"file://{root}"}
    if old:
        env["BACKUP_ENCRYPTION_OLD_KEYS"] = old
    return Settings.from_env(env)


def test_it_writes_permafrost_json_as_documented(tmp_path: Path) -> None:
    documented = json.loads(block("permafrost.json"))
    assert block("permafrost.json") == json.dumps(documented, indent=2, sort_keys=True)

    storage = LocalStorage(tmp_path)
    settings = _repo_settings(tmp_path, MASTER_INPUTS["master_key_base64"])
    repository.open_repository(storage, settings, create=True)
    raw = storage.get(layout.repository_config_key(settings.storage.prefix))
    written = json.loads(raw)
    assert raw == json.dumps(written, indent=2, sort_keys=True).encode() + b"\n"

    assert _shape(written) == _shape(documented)
    for field in ("format", "version", "chunk_size"):
        assert written[field] == documented[field]
    assert {k: v for k, v in written["kdf"].items() if k != "salt"} == {
        k: v for k, v in documented["kdf"].items() if k != "salt"
    }
    assert len(base64.b64decode(written["kdf"]["salt"])) == 16
    assert written["keys"][0]["key_id"] == documented["keys"][0]["key_id"] == MASTER.key_id
    assert crypto.key_check_passes(MASTER, documented["keys"][0]["check"])
    assert documented["keys"][0]["check"] == inputs("keycheck.inputs")["check"]


def test_it_registers_a_rotated_key_as_documented(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    old = MASTER_INPUTS["master_key_base64"]
    new = crypto.generate_key()
    repository.open_repository(storage, _repo_settings(tmp_path, old), create=True)

    with pytest.raises(errors.WrongKey):  # nobody vouches for the new key
        repository.open_repository(storage, _repo_settings(tmp_path, new), create=False)

    repo = repository.open_repository(storage, _repo_settings(tmp_path, new, old), create=False)
    config = repository.read_config(storage, "")
    assert config is not None
    assert [entry["key_id"] for entry in config["keys"]] == [MASTER.key_id, repo.key.key_id]
    assert crypto.key_check_passes(repo.key, config["keys"][1]["check"])
    # Registered, the new key opens the repository alone, and old objects still open with both.
    repository.open_repository(storage, _repo_settings(tmp_path, new), create=False)
    assert crypto.decrypt_bytes(repo.keyring, vector("v1").object)[1] == vector("v1").payload


# --- manifest ----------------------------------------------------------------------------


def test_it_signs_the_documented_manifest() -> None:
    raw = (block("manifest.json") + "\n").encode()
    parsed = manifest.parse(raw, KEYRING, "docs/FORMAT.md")  # checks the signature
    assert parsed.to_json(MASTER) == raw

    body = json.loads(raw)
    signature = body.pop("signature")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert canonical == block("manifest.canonical").encode()
    subkey = hmac.new(MASTER.key, b"permafrost manifest v1", hashlib.sha256).digest()
    assert subkey.hex() == MASTER_INPUTS["manifest_subkey"]
    assert hmac.new(subkey, canonical, hashlib.sha256).hexdigest() == signature
    assert crypto.sign(MASTER, canonical) == signature

    body["description"] = "edited"
    body["signature"] = signature
    with pytest.raises(errors.ManifestInvalid):
        manifest.parse(json.dumps(body).encode(), KEYRING, "edited")


def test_it_describes_vector_3_in_the_documented_manifest() -> None:
    parsed = manifest.parse((block("manifest.json") + "\n").encode(), KEYRING, "docs/FORMAT.md")
    v = vector("v3")
    assert parsed.stored_bytes == len(v.object)
    assert parsed.stored_sha256 == hashlib.sha256(v.object).hexdigest()
    assert parsed.compressed_bytes == len(v.payload)
    assert parsed.dump_bytes == len(v.plaintext)
    assert parsed.dump_sha256 == hashlib.sha256(v.plaintext).hexdigest()
    assert parsed.key_id == MASTER.key_id
    assert parsed.encryption["chunk_size"] == int(v.inputs["chunk_size"])
    data_key = layout.data_key("prod", parsed.tier, parsed.database, parsed.id)
    assert parsed.objects == {"data": data_key}


# --- bucket layout -----------------------------------------------------------------------


def test_it_builds_the_documented_keys() -> None:
    config_key, data_key, manifest_key = block("layout.examples").splitlines()
    backup_id = "20260101T020000Z-0a1b2c"
    assert layout.repository_config_key("prod") == config_key
    assert layout.repository_config_key("/prod/") == config_key
    assert layout.data_key("prod", "standard", "shop", backup_id) == data_key
    assert layout.manifest_key("prod", "standard", "shop", backup_id) == manifest_key
    assert layout.data_key("", "standard", "shop", backup_id) == data_key.removeprefix("prod/")
    assert layout.LOGICAL_TIERS == ("standard", "compliance", "keep")
    parsed = layout.parse_backup_key("prod", manifest_key)
    assert parsed == layout.BackupKey("standard", "shop", backup_id, "manifest.json")


def test_it_documents_the_name_rules_the_code_applies() -> None:
    patterns = inputs("layout.patterns")
    assert layout._NAME.pattern == patterns["database"]
    assert layout._BACKUP_ID.pattern == patterns["backup_id"]
    assert re.match(patterns["backup_id"], layout.new_backup_id())
    assert not layout.valid_name("a..b")
    assert not layout.valid_name("x" * 64)
    assert layout.valid_name("x" * 63)


# --- header version 2: a data key wrapped for a public key (X25519) -----------------------


X1 = inputs("x1.inputs")


class _FixedEphemeral(keys.PublicKey):
    """The vector's writer: its ephemeral key is the documented one, not a random one."""

    def wrap(self, data_key: bytes, aad: bytes, ephemeral: bytes | None = None) -> bytes:
        return super().wrap(data_key, aad, bytes.fromhex(X1["ephemeral_private"]))


def test_it_wraps_for_the_documented_public_key_to_the_documented_bytes() -> None:
    private = keys.PrivateKey(base64.b64decode(X1["recipient_private_base64"]))
    assert private.public.raw.hex() == X1["recipient_public"]
    assert base64.b64encode(private.public.raw).decode() == X1["recipient_public_base64"]
    assert private.key_id == X1["key_id"]
    public = _FixedEphemeral(private.public.raw)
    enc = crypto.Encryptor(
        public,
        compressed=False,
        chunk_size=int(X1["chunk_size"]),
        data_key=bytes.fromhex(X1["data_key"]),
        nonce_prefix=bytes.fromhex(X1["nonce_prefix"]),
    )
    produced = enc.update(bytes.fromhex(X1["plaintext"])) + enc.finish()
    assert enc.header.to_bytes() == hex_block("x1.header")
    assert produced == hex_block("x1.header") + hex_block("x1.chunks")
    assert len(produced) == int(X1["object_length"])
    assert public.subkey(b"permafrost manifest v1").hex() == X1["manifest_subkey"]


def test_it_derives_the_documented_x25519_kek() -> None:
    ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex(X1["ephemeral_private"]))
    recipient = bytes.fromhex(X1["recipient_public"])
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    assert shared.hex() == X1["shared"]
    mine = ephemeral.public_key().public_bytes_raw()
    assert keys.kek(shared, mine, recipient).hex() == X1["kek"]
    header = hex_block("x1.header")
    wrap_aad = header[:41]
    sealed = AESGCM(bytes.fromhex(X1["kek"])).decrypt(header[76:88], header[88:136], wrap_aad)
    assert sealed.hex() == X1["data_key"]


def test_only_the_documented_private_key_opens_vector_x1() -> None:
    obj = hex_block("x1.header") + hex_block("x1.chunks")
    private = keys.PrivateKey(bytes.fromhex(X1["recipient_private"]))
    ring = crypto.Keyring(private.public, (), {crypto.Wrap.X25519: private})
    header, plaintext = crypto.decrypt_bytes(ring, obj)
    assert plaintext.hex() == X1["plaintext"] and header.wrap_type == crypto.Wrap.X25519
    with pytest.raises(errors.WrongKey, match="only BACKUP_PRIVATE_KEY opens it"):
        crypto.decrypt_bytes(crypto.Keyring(private.public), obj)
    tampered = bytearray(obj)
    tampered[100] ^= 1  # a bit of the wrapped data key
    with pytest.raises(errors.HeaderCorrupt):
        crypto.decrypt_bytes(ring, bytes(tampered))
