"""Views of the calls app: they parse, authorize, call a selector or service, and render."""
