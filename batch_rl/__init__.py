"""batch_rl: offline and online value-based agents for studying feature rank collapse."""
from batch_rl import moved_modules as _moved_modules

_moved_modules.install()
