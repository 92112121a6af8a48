"""What the dashboard's server exposes: only this machine (loopback), no usage statistics,
Streamlit's cross-site request protection left on, a bounded upload size."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".streamlit" / "config.toml"


def _config() -> dict:
    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))


def test_server_binds_to_loopback_only():
    assert _config()["server"]["address"] == "127.0.0.1"


def test_xsrf_and_cors_protection_are_not_disabled():
    server = _config()["server"]
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True


def test_no_usage_statistics_and_bounded_uploads():
    cfg = _config()
    assert cfg["browser"]["gatherUsageStats"] is False
    assert 0 < int(cfg["server"]["maxUploadSize"]) <= 4096  # MB


def test_streamlit_reads_these_settings():
    """The settings above are the ones Streamlit applies when run from the repository root."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert 'address = "127.0.0.1"' in text


def test_forward_message_cache_is_off():
    """No element is cacheable, so the server never sends a reference to one the browser may have
    dropped meanwhile (fast input killed the session with "Cached ForwardMsg MISS"; see the comment
    in config.toml and tests/e2e/test_masks_roc_fast_input.py)."""
    import subprocess
    import sys

    assert float(_config()["global"]["minCachedMessageSize"]) >= 1e15
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('global.minCachedMessageSize'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) >= 1e15
