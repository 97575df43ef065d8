import os
from pathlib import Path

import pytest

from madef_assets.project import PROJECT_ROOT
from madef_assets.settings import load_settings

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Where the bundled model is converted once and reused (the project's own state folder)."""
    path = load_settings(env={k: v for k, v in os.environ.items() if k != "MADEF_PROFILE"}).models_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def openai_server():
    from madef_assets_tests.openai_server import OpenAICompatibleServer

    with OpenAICompatibleServer() as server:
        yield server


# The modules that take minutes (whole-graph runs, real trainings), longest first: run first, so that the
# two workers of `make test` (pytest-xdist, --dist loadfile) do not end with one of them alone on one.
LONGEST_MODULES = ("test_method_pipeline", "test_rehearsal", "test_training", "test_celery", "test_pools")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.stem
        return LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)

    items.sort(key=rank)  # stable: the order within a module, and of the other modules, is kept
