"""Scheduled bucket cleanup: which stored reference images to delete, and deleting them safely."""
