"""Where the package and the project checkout are, defined once."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # reuse_nets/
PROJECT_ROOT = PACKAGE_DIR.parent  # the checkout: experiments/, pyproject.toml, uv.lock
