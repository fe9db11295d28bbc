"""Training, conversion and evaluation tools (TensorFlow only here, never on the door)."""
