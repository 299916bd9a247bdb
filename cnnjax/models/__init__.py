"""The model zoo: `create(name, **kw)` builds any registered model, `names()` lists them,
`native_input(name)` gives the (H, W, C) image it was designed for, and
`features(model, variables, x, stages)` returns a classifier's named intermediate feature
maps (`feature_names(model)` lists them; see `cnnjax.models.feature_maps`).

Each family lives in its own module and registers its variants on import.
"""

from cnnjax.models.registry import create, names, native_input, register
from cnnjax.models.feature_maps import feature_names, features

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

__all__ = ["create", "feature_names", "features", "names", "native_input", "register"]
