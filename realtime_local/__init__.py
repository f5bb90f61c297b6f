"""realtime_local: a self-hosted server that speaks the OpenAI Realtime API surface with offline speech."""
