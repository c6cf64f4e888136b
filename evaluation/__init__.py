"""The detector's labelled evaluation (``make eval-detect``): generated traffic with injected
attacks, run through the detector, scored for recall, time to detect and false alerts. A test
kit, not part of the installed package."""
