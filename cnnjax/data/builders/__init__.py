"""TFDS builders that ship with cnnjax; importing this package registers them with TFDS."""

from cnnjax.data.builders.digits import Digits
from cnnjax.data.builders.shapes import Shapes

BUILDERS = (Digits, Shapes)
NAMES = ("digits", "shapes")
