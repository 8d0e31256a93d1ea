"""Browser tests: pages driven in Debian's Chromium by Playwright, screenshots kept under ``artifacts/screenshots``."""
