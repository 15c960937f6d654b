"""charlite: turn a written profile of a person into a local role-play agent."""

__version__ = "0.1.0"
