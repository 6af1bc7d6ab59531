"""The ``warden`` command.

Commands import the Prefect layer lazily, so ``warden --help`` stays fast.

When a ``.stack`` directory made by ``python -m stack up`` exists in the
current directory (or ``WARDEN_STACK_DIR`` names one), its ``env`` and
``runner.env`` files are read first. Variables already set in the environment
take precedence.
"""

from warden.cli import accounts, oauth, sessions, sync  # noqa: F401 - importing a module registers its commands
from warden.cli.app import app, load_stack_env

__all__ = ["app", "load_stack_env"]
