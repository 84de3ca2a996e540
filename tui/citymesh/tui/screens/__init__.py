"""Screens of the citymesh TUI, one per module."""
