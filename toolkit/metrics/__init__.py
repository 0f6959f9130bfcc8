"""Metric helpers: speed figures and formatting of metric dictionaries."""

from toolkit.metrics.reporting import format_metrics_table, metrics_format, speed_metrics, write_metrics_json

__all__ = ["format_metrics_table", "metrics_format", "speed_metrics", "write_metrics_json"]
