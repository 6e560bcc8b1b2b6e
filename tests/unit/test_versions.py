"""One version for the packages, the images and the chart: kubeswarm_runtime.__version__."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from kubeswarm_operator.settings import OperatorSettings
from kubeswarm_runtime import __version__

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubeswarm" / "Chart.yaml"


def test_packages_images_and_chart_share_one_version() -> None:
    assert version("kubeswarm-runtime") == version("kubeswarm-operator") == __version__
    # The Makefile tags the images with the chart's appVersion.
    assert yaml.safe_load(CHART.read_text())["appVersion"] == __version__
    assert OperatorSettings().runtime_image.endswith(f":{__version__}")
