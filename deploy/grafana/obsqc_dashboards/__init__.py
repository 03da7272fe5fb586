"""obsqc's Grafana dashboards as code: one definition per dashboard, built with grafana-foundation-sdk.

``build_all()`` returns every dashboard by file name; ``deploy/grafana/generate.py`` writes them to
``deploy/grafana/dashboards/``, where Grafana's file provider (provisioning/dashboards/obsqc.yml) reads
them. Modules: ``common`` (datasource, variables, finishing), ``panels`` (panel makers), ``layouts``
(camera layouts from the simulator's focal plane), and one module per dashboard.
"""

from __future__ import annotations

from obsqc_dashboards import focal_plane, overview, science

__all__ = ["build_all"]


def build_all() -> dict[str, dict]:
    """Every dashboard as JSON data, keyed by its file name (``<uid>.json``)."""
    return {f"{module.UID}.json": module.build() for module in (overview, focal_plane, science)}
