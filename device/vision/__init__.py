"""Vision: frame -> faces (detect, landmarks, align, embed, quality)."""
