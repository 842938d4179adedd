"""Minimal stand-in for torchvision, only so that facenet-pytorch (installed --no-deps) imports.

facenet-pytorch's MTCNN needs ``torchvision.ops.boxes.batched_nms`` and imports
``torchvision.transforms.functional`` (used only by its face-cropping helper, which
the benchmark does not call). Put ``benchmarks/_shims`` first on ``sys.path`` to use it.
Not part of the facesieve package.
"""
