"""Placeholder: the stdlib client for the coactive-credd socket protocol is being written."""
