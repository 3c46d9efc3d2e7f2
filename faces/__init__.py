"""doublure.faces: face detection, tracking, alignment, masks and faceset extraction.

Modules: ``face`` (the Face record carried in ``Image.faces``), ``detect`` (mediapipe backend), ``track``
(association, smoothing, pose), ``align`` (template, crop transforms, warps), ``masks`` (region masks),
``trackfile`` (stored shot analysis), ``extract`` (facesets and the coverage report).
"""
from .face import Face, faces_from_json, faces_to_json

__all__ = ["Face", "faces_from_json", "faces_to_json"]
