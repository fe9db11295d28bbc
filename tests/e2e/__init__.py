"""End-to-end tests: the real daemon with its admin page, driven in headless Chromium."""
