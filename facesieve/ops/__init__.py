"""Small numeric building blocks shared by detectors, evaluation and training."""
from facesieve.ops.boxes import batched_nms, box_area, box_iou, nms

__all__ = ["batched_nms", "box_area", "box_iou", "nms"]
