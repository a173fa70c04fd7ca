"""The runtime's promise: importing gist_onnx pulls in no torch, transformers or optimum."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.core


def test_import_is_lean() -> None:
    code = (
        "import sys, gist_onnx, gist_onnx.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'optimum', 'sentence_transformers') if m in "
        "sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_help_needs_no_export_extra() -> None:
    code = (
        "import sys\n"
        "from gist_onnx.cli import main\n"
        "try:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
