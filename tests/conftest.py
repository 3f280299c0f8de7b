import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_models import loudness_model  # noqa: E402


@pytest.fixture
def loud_model_path(tmp_path):
    return loudness_model(tmp_path)
