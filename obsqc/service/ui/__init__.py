"""The operators' pages under ``/ui``: server-rendered HTML (Jinja2, autoescaped), small local CSS and
JavaScript, no front-end build and nothing fetched from outside.

* :mod:`~obsqc.service.ui.pages`: the routes (exposure list, one exposure, galaxy gallery);
* :mod:`~obsqc.service.ui.queries`: the store queries the pages need beyond the JSON API's;
* :mod:`~obsqc.service.ui.views`: what an exposure page shows, computed from its record and artifacts;
* :mod:`~obsqc.service.ui.svg`: the focal-plane map and the histograms, drawn as SVG geometry;
* :mod:`~obsqc.service.ui.explain`: every flag in words, with what an operator should check;
* :mod:`~obsqc.service.ui.artifacts` and :mod:`~obsqc.service.ui.thumbs`: what the worker writes at
  judge time for the pages (CCD layout, histograms against the reference, thumbnails of flagged CCDs).

The worker imports only ``artifacts`` and ``thumbs`` (numpy, PIL), never FastAPI or Jinja2.
"""
