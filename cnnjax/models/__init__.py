"""The model zoo: `create(name, **kw)` builds any registered model, `names()` lists them.

Each family lives in its own module and registers its variants on import.
"""

from cnnjax.models.registry import create, names, register

__all__ = ["create", "names", "register"]
