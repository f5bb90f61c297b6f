from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = "Calls"

    def ready(self) -> None:
        """Plug the MCP bridge into the tool registry: every call's toolbox asks it for the tools of
        the MCP servers linked to the call's profile (one query when there are none)."""
        from calls.tools import registry
        from calls.tools.mcp import McpToolProvider

        registry.add_provider(McpToolProvider())
