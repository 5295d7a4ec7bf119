"""Reports: compare models, HTML, Markdown and JSON."""
