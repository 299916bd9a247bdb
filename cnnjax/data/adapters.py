"""Per-dataset adapters from a decoded TFDS example to cnnjax's feature dict.

Every dataset comes out of the host pipeline with the same names, whatever TFDS calls them:

- 'image': uint8 [H, W, C];
- 'label': int32 [] (the image's class; for detection data, the class of the largest object);
- segmentation data adds 'mask': uint8 [H, W] (0 = background);
- detection data adds 'boxes': float32 [M, 4] (x1, y1, x2, y2 in pixels),
  'box_labels': int32 [M] and 'box_valid': bool [M], padded to a fixed M.

Datasets whose images vary in size are resized on the host to a fixed square (shorter side
to `image_size`, then a centre crop), since examples must stack into a batch; everything
else (crops, flips, colour) happens on the device.
"""

import dataclasses
from typing import Any

import numpy as np
import PIL.Image

CLASSIFICATION = ("image", "label")
SEGMENTATION = ("image", "label", "mask")
DETECTION = ("image", "label", "boxes", "box_labels", "box_valid")
SEGMENTATION_AND_DETECTION = ("image", "label", "mask", "boxes", "box_labels", "box_valid")

# Square side for datasets whose images vary in size, unless the caller picks one.
DEFAULT_IMAGE_SIZE = {"imagenet2012": 256, "oxford_iiit_pet": 256, "voc": 384}
FALLBACK_IMAGE_SIZE = 256
# Boxes kept per image for detection datasets read from TFDS (VOC has at most 42).
MAX_OBJECTS = {"voc": 48}
# oxford_iiit_pet trimap (1 pet, 2 background, 3 border) -> 0 background, 1 pet, 2 border.
PET_TRIMAP = np.array([0, 1, 0, 2], np.uint8)


@dataclasses.dataclass(frozen=True)
class Adapter:
  """Callable mapping one decoded TFDS example to cnnjax's features.

  Attributes:
    kind: 'classification', 'shapes' (cnnjax's builder, already in cnnjax's form),
      'pet' (oxford_iiit_pet: trimap mask), 'voc' (objects -> padded boxes).
    image_size: resize to [image_size, image_size] (shorter side, centre crop); None keeps
      the stored size.
    label_names: sorted class names, for datasets whose 'label' is a string (lfw).
    max_objects: M, the padded box count for 'voc'.
  """

  kind: str = "classification"
  image_size: int | None = None
  label_names: tuple[str, ...] | None = None
  max_objects: int = 0

  @property
  def features(self) -> tuple[str, ...]:
    return {
      "classification": CLASSIFICATION,
      "shapes": SEGMENTATION_AND_DETECTION,
      "pet": SEGMENTATION,
      "voc": DETECTION,
    }[self.kind]

  def label(self, example: dict[str, Any]) -> int:
    """The integer class of one raw example."""
    label = example["label"]
    if self.label_names is not None:
      name = label.decode() if isinstance(label, bytes) else str(label)
      return self.label_names.index(name)
    return int(label)

  def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    image = _rgb_or_gray(np.asarray(example["image"]))
    if self.kind == "shapes":
      out = {k: np.asarray(example[k]) for k in SEGMENTATION_AND_DETECTION}
      out["label"] = out["label"].astype(np.int32)
      out["box_labels"] = out["box_labels"].astype(np.int32)
      return out
    if self.kind == "voc":
      return self._voc(image, example)
    out = {"image": image, "label": np.int32(self.label(example))}
    if self.kind == "pet":
      trimap = np.asarray(example["segmentation_mask"])[..., 0]
      out["mask"] = np.take(PET_TRIMAP, trimap, mode="clip")
    if self.image_size is not None:
      out["image"] = _resize_crop(out["image"], self.image_size, PIL.Image.BILINEAR)
      if "mask" in out:
        out["mask"] = _resize_crop(out["mask"], self.image_size, PIL.Image.NEAREST)
    return out

  def _voc(self, image: np.ndarray, example: dict[str, Any]) -> dict[str, np.ndarray]:
    objects = example["objects"]
    height, width = image.shape[:2]
    # TFDS boxes are normalised (ymin, xmin, ymax, xmax).
    bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    labels = np.asarray(objects["label"], np.int32).reshape(-1)
    # Real VOC has one label per box; tfds.testing.mock_data draws their counts separately.
    bbox, labels = bbox[: len(labels)], labels[: len(bbox)]
    boxes = bbox[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float32)
    if self.image_size is not None:
      scale, left, top = _resize_crop_geometry(height, width, self.image_size)
      boxes = boxes * scale - np.array([left, top, left, top], np.float32)
      boxes = np.clip(boxes, 0, self.image_size)
      image = _resize_crop(image, self.image_size, PIL.Image.BILINEAR)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep][: self.max_objects], labels[keep][: self.max_objects]
    count = len(labels)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    padded_boxes = np.zeros((self.max_objects, 4), np.float32)
    padded_labels = np.zeros((self.max_objects,), np.int32)
    padded_boxes[:count], padded_labels[:count] = boxes, labels
    return {
      "image": image,
      "label": np.int32(labels[np.argmax(areas)] if count else 0),
      "boxes": padded_boxes,
      "box_labels": padded_labels,
      "box_valid": np.arange(self.max_objects) < count,
    }


def _rgb_or_gray(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C]; a grayscale [H, W] decode gets its channel axis back."""
  if image.ndim == 2:
    image = image[..., None]
  return image.astype(np.uint8, copy=False)


def _resize_crop_geometry(height: int, width: int, size: int) -> tuple[float, int, int]:
  """Scale that takes the shorter side to `size`, and the (left, top) of the centre crop."""
  scale = size / min(height, width)
  new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
  return scale, (new_width - size) // 2, (new_height - size) // 2


def _resize_crop(array: np.ndarray, size: int, resample: int) -> np.ndarray:
  """[H, W(, C)] uint8 -> [size, size(, C)]: shorter side to `size`, then centre crop."""
  height, width = array.shape[:2]
  scale, left, top = _resize_crop_geometry(height, width, size)
  new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
  squeeze = array.ndim == 3 and array.shape[-1] == 1
  pil = PIL.Image.fromarray(array[..., 0] if squeeze else array)
  pil = pil.resize(new_size, resample=resample).crop((left, top, left + size, top + size))
  resized = np.asarray(pil)
  return resized[..., None] if squeeze else resized
