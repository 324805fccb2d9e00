"""Operations: metrics, the HTTP endpoint, dashboard, report, doctor and export."""
