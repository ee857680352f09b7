"""Things people look at: the report template and Grafana dashboards (installed as amlab.dashboards)."""
