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
