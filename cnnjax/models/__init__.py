"""The model zoo: `create(name, **kw)` builds any registered model, `names()` lists them,
`native_input(name)` gives the (H, W, C) image it was designed for.

Each family lives in its own module and registers its variants on import.
"""

from cnnjax.models.registry import create, names, native_input, register

import cnnjax.models.unet  # noqa: F401,E402
import cnnjax.models.yolo  # noqa: F401,E402
import cnnjax.models.rcnn  # noqa: F401,E402
import cnnjax.models.densenet  # noqa: F401
import cnnjax.models.mobilenet  # noqa: F401
import cnnjax.models.resnet  # noqa: F401
import cnnjax.models.lenet  # noqa: F401
import cnnjax.models.alexnet  # noqa: F401
import cnnjax.models.vgg  # noqa: F401
import cnnjax.models.nin  # noqa: F401
import cnnjax.models.googlenet  # noqa: F401

__all__ = ["create", "names", "native_input", "register"]
