"""Operations: Prometheus series (`metrics`), the protected `/metrics` view (`views`), JSON logs with
request and call ids (`logs`, `middleware`). See docs/observability.md."""
