import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

THREADS = int(os.environ.get("UNITUNE_TEST_THREADS", min(2, os.cpu_count() or 1)))
torch.set_num_threads(THREADS)
os.environ.setdefault("UNITUNE_NB_THREADS", str(THREADS))  # the CLI and the notebooks' kernels use as many


@pytest.fixture(scope="session")
def text_encoder():
    from unitune_nb.text import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def cascade(text_encoder):
    """The shipped embedded cascade."""
    from unitune_nb.cascade import Cascade

    return Cascade.from_pretrained(text_encoder=text_encoder)


@pytest.fixture
def ut(cascade):
    """A UniTune on the shared cascade, put back to the pristine weights afterwards."""
    from unitune_nb.tune import UniTune

    u = UniTune(cascade)
    yield u
    u.reset()
