"""Every state change of the calls app, as typed functions with keyword-only arguments.

- `realtime_client`: the only module that knows the Realtime API's wire format (REST and sideband URL).
- `session_config`: an `AgentProfile` turned into the API's session config.
- `calls`: the call lifecycle (start a web call, register a direct one, hang up, issue a client secret).
Views and consumers parse, authorize and call one of these; nothing else writes.
"""
