"""Widgets of the citymesh TUI, one concern per module."""
