"""coactive-credd: keep Coactive API access tokens fresh and hand them to local programs."""

__version__ = "0.1.0"
