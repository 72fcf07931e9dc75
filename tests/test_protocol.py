"""Message signing: nothing unauthenticated is ever unpickled (pure, no Flux)."""

import pickle

import pytest

from parsl_flux import protocol
from parsl_flux.protocol import AuthenticationError, Kind


class _Bomb:
    """Unpickling this would create a file: proof of unpickling."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_roundtrip():
    key = protocol.new_secret()
    frames = protocol.encode(key, Kind.TASKS, [{"id": 1, "payload": b"x"}])
    assert protocol.decode(key, frames) == (Kind.TASKS, [{"id": 1, "payload": b"x"}])


def test_block_keys_differ_per_block_and_secret():
    m1, m2 = protocol.new_secret(), protocol.new_secret()
    assert protocol.block_key(m1, "0") != protocol.block_key(m1, "1")
    assert protocol.block_key(m1, "0") != protocol.block_key(m2, "0")
    assert protocol.block_key(m1, "0") == protocol.block_key(m1, "0")


@pytest.mark.parametrize("tamper", ["wrong_key", "body", "kind", "version", "frames"])
def test_tampered_messages_are_rejected_before_unpickling(tmp_path, tamper):
    key = protocol.new_secret()
    target = tmp_path / "unpickled"
    frames = protocol.encode(key, Kind.RESULTS, [])
    bomb = pickle.dumps(_Bomb(str(target)))
    if tamper == "wrong_key":
        frames = protocol.encode(protocol.new_secret(), Kind.RESULTS, _Bomb(str(target)))
    elif tamper == "body":
        frames[2] = bomb
    elif tamper == "kind":
        frames[1] = b"tasks"
    elif tamper == "version":
        frames[0] = b"parsl-flux/0"
    elif tamper == "frames":
        frames = [bomb]
    with pytest.raises(AuthenticationError):
        protocol.decode(key, frames)
    assert protocol.decode_or_none(key, frames) is None
    assert not target.exists()


def test_unknown_kind_with_valid_mac_is_rejected():
    key = protocol.new_secret()
    body = pickle.dumps(None)
    mac = protocol._mac(key, b"evil", body)
    with pytest.raises(AuthenticationError, match="unknown message kind"):
        protocol.decode(key, [protocol.VERSION, b"evil", body, mac])


def test_missing_key_rejects():
    assert protocol.decode_or_none(None, protocol.encode(b"k" * 32, Kind.BYE, {})) is None


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 100])
def test_hmac_matches_the_standard_library(key):
    import hashlib
    import hmac

    for msg in (b"", b"hello", bytes(range(256)) * 9):
        assert protocol.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_runner_side_imports_stay_small():
    """The modules every Flux job loads must not pull in heavy ones."""
    import subprocess
    import sys

    code = ("import sys, parsl_flux.runner; heavy = {'parsl', 'zmq', 'cloudpickle', 'hashlib', 'enum', 'typing',"
            " 'socket', 'pickle'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
