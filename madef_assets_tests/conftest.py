import os
import signal
import threading
import warnings
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


RESTORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def ignored_signals() -> int:
    """The kernel's mask of signals this process ignores (a library may set SIG_IGN without Python seeing it)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    return int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("SigIgn:")), 16)


@pytest.fixture(autouse=True)
def signal_dispositions_restored(request):
    """Each test leaves this process's signal handlers as it found them. A library that sets SIG_IGN in the
    test process (and does not restore it) would otherwise make every later child process ignore SIGINT or
    SIGTERM (dispositions to ignore survive exec), and the tests that signal children would wait in vain."""
    before, ignored_before = {signum: signal.getsignal(signum) for signum in RESTORED_SIGNALS}, ignored_signals()
    yield
    if threading.current_thread() is not threading.main_thread():
        return
    ignored_after = ignored_signals()
    for signum, handler in before.items():
        bit = 1 << (signum - 1)
        if signal.getsignal(signum) != handler or (ignored_before ^ ignored_after) & bit:
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            warnings.warn(f"{request.node.nodeid} left {signal.Signals(signum).name} changed; restored", stacklevel=1)
