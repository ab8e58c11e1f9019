"""Shared parts of the experiment configs, one concern per file; variants import and override."""
