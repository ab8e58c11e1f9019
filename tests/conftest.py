"""Shared test fixtures: where the real data lives and how to skip without it."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data (alphamatting.com) may not be redistributed, so it is read from beside the checkout.
SHARED_DIR = Path(os.environ.get("DIFFMATTE_SHARED", REPO_ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set DIFFMATTE_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder with real images, alphas, trimaps and backgrounds (``shared/data``)."""
    return _require(SHARED_DIR / "data")


@pytest.fixture(scope="session")
def metric_fixtures_dir() -> Path:
    """The official-evaluation fixtures (``shared/fixtures/metrics``)."""
    return _require(SHARED_DIR / "fixtures" / "metrics")


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    """Facts about the released models (``shared/spec``)."""
    return _require(SHARED_DIR / "spec")
