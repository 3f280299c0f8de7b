import datetime
import os
import sys
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))

from onnx_models import loudness_model  # noqa: E402

from triage.embedded_redis import EmbeddedRedis  # noqa: E402


@pytest.fixture
def loud_model_path(tmp_path):
    return loudness_model(tmp_path)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real Redis-compatible server on a free port, AOF fsync on every write, per test module."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="always") as r:
        yield r


@pytest.fixture
def rdb(redis_server):
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    c.flushall()
    yield c
    c.close()


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory):
    """A self-signed certificate and key for 127.0.0.1 (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    os.chmod(d / "key.pem", 0o600)
    return d / "cert.pem", d / "key.pem"
