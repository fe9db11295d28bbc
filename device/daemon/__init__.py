"""The door daemon: camera -> vision -> identification -> votes and access rules -> door,
with every decision written to the access log."""
