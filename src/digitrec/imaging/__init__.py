"""Imaging: image bytes -> grey -> ink -> 28x28 digits (one per image, or the digits of a line)."""
