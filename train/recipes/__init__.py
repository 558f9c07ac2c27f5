"""Training recipes: scripted, reproducible runs that train, select, export and measure a model."""
