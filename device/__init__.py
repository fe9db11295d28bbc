"""facegate: face-recognition access control for a door.

The package is laid out in the order a frame flows through it:
``vision`` (detect, landmarks, align, embed, quality) -> ``gallery`` (store, matcher),
with ``cli`` as the thin command-line face of those services.
"""

__version__ = "0.1.0"
