"""`python -m sparkflow`, and the `sparkflow` command (pyproject.toml's console script)."""

import gc

# A command's start-up imports some 450 modules: ~300k objects that live as long as the process. The cyclic collector
# would walk them again and again while they are being created. It stays off until the command's own modules are loaded;
# sparkflow.cli then freezes what start-up made (the collector never looks at it again) and turns it back on.
gc.disable()

from sparkflow.cli import entry  # noqa: E402  (after the collector is off)

if __name__ == "__main__":
    entry()
