"""Swappable backends: one small interface each, a real implementation per mode."""
